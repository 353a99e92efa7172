"""What the sync and asyncio clients share: addresses, frames, parameters.

Frames follow docs/protocol.md: request [0, msgid, method, [params]],
response [1, msgid, error, result], notification [2, method, params].
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import msgpack  # type: ignore[import-untyped]

from .errors import ProtocolError

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MSGID_MOD = 1 << 32

Address = Union[Tuple[str, str], Tuple[str, Tuple[str, int]]]


def default_address() -> str:
    """The daemon's default socket: unix:$XDG_RUNTIME_DIR/mtpd/mtpd.sock, or
    unix:$TMPDIR/mtpd-$UID/mtpd.sock (TMPDIR defaulting to /tmp)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return "unix:" + os.path.join(xdg, "mtpd", "mtpd.sock")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return "unix:" + os.path.join(tmp, f"mtpd-{os.getuid()}", "mtpd.sock")


def parse_address(addr: Optional[str]) -> Address:
    """'unix:PATH' | 'tcp:HOST:PORT' (HOST may be [v6]) | a bare path ->
    ("unix", path) or ("tcp", (host, port)); None means the default."""
    if addr is None:
        addr = default_address()
    if addr.startswith("unix:"):
        return ("unix", addr[5:])
    if addr.startswith("tcp:"):
        rest = addr[4:]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"bad address {addr!r} (want tcp:HOST:PORT)")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return ("tcp", (host, int(port)))
    if addr.startswith(("/", "./")):
        return ("unix", addr)
    raise ValueError(f"bad address {addr!r} (want unix:PATH or tcp:HOST:PORT)")


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def request_frame(msgid: int, method: str, params: Mapping[str, Any]) -> bytes:
    return pack([REQUEST, msgid, method, [dict(params)] if params else []])


def new_unpacker() -> "msgpack.Unpacker":
    return msgpack.Unpacker(raw=False, strict_map_key=False,
                            max_buffer_size=256 << 20)


def classify(frame: Any) -> Tuple[int, Any, Any, Any]:
    """(kind, a, b, c): (RESPONSE, msgid, error, result) or
    (NOTIFICATION, method, params, None); raises ProtocolError otherwise."""
    if isinstance(frame, (list, tuple)):
        if len(frame) == 4 and frame[0] == RESPONSE and isinstance(frame[1], int):
            return RESPONSE, frame[1], frame[2], frame[3]
        if len(frame) == 3 and frame[0] == NOTIFICATION and isinstance(frame[1], str):
            return NOTIFICATION, frame[1], frame[2], None
    raise ProtocolError(f"unexpected frame from the daemon: {frame!r:.200}")


def notification_body(params: Any) -> Dict[str, Any]:
    """The one map of a notification's params array ({} if absent)."""
    if isinstance(params, (list, tuple)) and params and isinstance(params[0], Mapping):
        return dict(params[0])
    if isinstance(params, Mapping):
        return dict(params)
    return {}


def gen_params(prompt: Optional[str] = None, ids: Optional[Sequence[int]] = None,
               messages: Optional[Sequence[Mapping[str, str]]] = None,
               session: Optional[str] = None, stream: bool = False,
               extra: Optional[Mapping[str, Any]] = None,
               **opts: Any) -> Dict[str, Any]:
    """The params map of generate: exactly one of prompt / ids / messages,
    the options that are not None, and `extra` as given."""
    given = [x for x in (prompt, ids, messages) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of prompt, ids, messages")
    p: Dict[str, Any] = {}
    if prompt is not None:
        p["prompt"] = prompt
    elif ids is not None:
        p["ids"] = [int(i) for i in ids]
    else:
        p["messages"] = [dict(m) for m in messages or ()]
    return finish_params(p, session, stream, extra, opts)


def finish_params(p: Dict[str, Any], session: Optional[str], stream: bool,
                  extra: Optional[Mapping[str, Any]],
                  opts: Mapping[str, Any]) -> Dict[str, Any]:
    for k, v in opts.items():
        if v is not None:
            p[k] = list(v) if k == "stop" else v
    if session is not None:
        p["session"] = session
    if stream:
        p["stream"] = True
    if extra:
        p.update(extra)
    return p


def ids_list(x: Any) -> List[int]:
    return [int(i) for i in x]
