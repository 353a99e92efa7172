"""The synchronous client: one socket, requests matched to responses by
msgid (several threads may share a Client; streams interleave)."""
import collections
import socket
import threading
from typing import (Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Set, Union, overload)

from . import _wire
from .errors import ConnectionClosedError, MtpdError, ProtocolError, error_from_wire
from .types import Chunk, GenStats, HelloInfo, Result

from typing import Literal


class Client:
    """A connection to `mtpd serve`.

        with Client("unix:/run/user/1000/mtpd/mtpd.sock") as c:
            print(c.generate("def add(a, b):", max_tokens=32).text)
            for chunk in c.generate("import os\\n", stream=True):
                print(chunk.text, end="", flush=True)

    address: "unix:PATH" or "tcp:HOST:PORT" (default: the daemon's default
    socket, see docs/protocol.md). token: sent with `hello` at once (needed
    on TCP connections of a daemon with --auth-token-file). timeout: seconds
    a socket read or write may block (None: forever).
    """

    def __init__(self, address: Optional[str] = None, *, token: Optional[str] = None,
                 timeout: Optional[float] = None,
                 connect_timeout: Optional[float] = 10.0) -> None:
        self.address = address or _wire.default_address()
        kind, where = _wire.parse_address(self.address)
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in where[0] else socket.AF_INET,
                                 socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(where)
            sock.settimeout(timeout)
            if kind == "tcp":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._unpacker = _wire.new_unpacker()
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._id_lock = threading.Lock()
        self._next_id = 1
        self._responses: Dict[int, Any] = {}
        self._chunks: Dict[int, Deque[Dict[str, Any]]] = {}
        self._pending: Set[int] = set()
        self._dead: Optional[MtpdError] = None
        #: called with (method, params) for notifications other than
        #: generate.chunk / error
        self.on_notification: Optional[Callable[[str, Any], None]] = None
        self.hello_info: Optional[HelloInfo] = None
        if token is not None:
            try:
                self.hello(token=token)
            except BaseException:
                self.close()
                raise

    # -- plumbing ---------------------------------------------------------
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the socket (the daemon cancels this connection's running
        requests; sessions stay)."""
        if self._dead is None:
            self._dead = ConnectionClosedError("the client closed the connection")
        try:
            self._sock.close()
        except OSError:
            pass

    @property
    def closed(self) -> bool:
        return self._dead is not None

    def send_request(self, method: str, params: Optional[Mapping[str, Any]] = None,
                     stream: bool = False) -> int:
        """Sends a request without waiting; -> its msgid (wait_response(msgid)
        gets the answer)."""
        if self._dead is not None:
            raise self._dead
        with self._id_lock:
            msgid = self._next_id
            self._next_id = (self._next_id + 1) % _wire.MSGID_MOD
            self._pending.add(msgid)
            if stream:
                self._chunks[msgid] = collections.deque()
        data = _wire.request_frame(msgid, method, params or {})
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self._drain_closed()  # the daemon may have said why (an error notification)
            self._fail(ConnectionClosedError(f"send failed: {e}"))
            raise self._dead from e  # type: ignore[misc]
        return msgid

    def _drain_closed(self) -> None:
        """After a failed send: reads and dispatches what the daemon sent
        before it closed the connection (briefly, never blocking long)."""
        try:
            with self._read_lock:
                self._sock.settimeout(0.5)
                while self._dead is None:
                    data = self._sock.recv(1 << 16)
                    if not data:
                        break
                    self._unpacker.feed(data)
                    for frame in self._unpacker:
                        self._dispatch(frame)
        except (OSError, ValueError, MtpdError):
            pass

    def _fail(self, exc: MtpdError) -> None:
        if self._dead is None:
            self._dead = exc
        try:
            self._sock.close()
        except OSError:
            pass

    def _dispatch(self, frame: Any) -> None:
        kind, a, b, c = _wire.classify(frame)
        if kind == _wire.RESPONSE:
            if a in self._pending:
                self._responses[a] = (b, c)
            return
        body = _wire.notification_body(b)
        if a == "generate.chunk":
            q = self._chunks.get(body.get("msgid"))  # type: ignore[arg-type]
            if q is not None:
                q.append(body)
        elif a == "error":
            err = error_from_wire(body)
            if not isinstance(err, ProtocolError):
                err = ProtocolError(err.message, code=err.code, data=err.data)
            self._fail(err)
        elif self.on_notification is not None:
            self.on_notification(a, b)

    def _pump(self, ready: Callable[[], bool]) -> None:
        """Reads and dispatches frames until ready() (checked under the read
        lock, so that a frame another thread read is never waited for)."""
        with self._read_lock:
            while not ready():
                if self._dead is not None:
                    raise self._dead
                try:
                    data = self._sock.recv(1 << 16)
                except socket.timeout:
                    raise
                except OSError as e:
                    self._fail(ConnectionClosedError(f"receive failed: {e}"))
                    continue
                if not data:
                    self._fail(ConnectionClosedError("the daemon closed the connection"))
                    continue
                self._unpacker.feed(data)
                try:
                    for frame in self._unpacker:
                        self._dispatch(frame)
                except (ValueError, MtpdError) as e:
                    if isinstance(e, MtpdError):
                        self._fail(e)
                    else:
                        self._fail(ProtocolError(f"bad msgpack from the daemon: {e}"))

    def _take_response(self, msgid: int) -> Any:
        err, res = self._responses.pop(msgid)
        self._pending.discard(msgid)
        self._chunks.pop(msgid, None)
        if err is not None:
            raise error_from_wire(err)
        return res

    def wait_response(self, msgid: int) -> Any:
        """Blocks until the response to msgid; -> its result (raises its
        error as an MtpdError subclass)."""
        self._pump(lambda: msgid in self._responses)
        return self._take_response(msgid)

    def call(self, method: str, params: Optional[Mapping[str, Any]] = None,
             **fields: Any) -> Any:
        """Any method by name: call("session.info", session=sid)."""
        p = dict(params or {})
        p.update(fields)
        return self.wait_response(self.send_request(method, p))

    # -- methods ----------------------------------------------------------
    def hello(self, token: Optional[str] = None) -> HelloInfo:
        """Server, protocol and model summary, limits. With token: the
        authentication a non-loopback TCP daemon requires first."""
        info: HelloInfo = self.call("hello", {"token": token} if token is not None else {})
        self.hello_info = info
        return info

    def session_open(self) -> str:
        return str(self.call("session.open")["session"])

    def session_close(self, session: str) -> bool:
        return bool(self.call("session.close", session=session).get("closed", True))

    def session_info(self, session: str) -> Dict[str, Any]:
        return dict(self.call("session.info", session=session))

    def session(self, session_id: Optional[str] = None,
                close: Optional[bool] = None) -> "Session":
        """A session (a new one, or session_id's: reconnecting to one that
        outlived its connection). As a context manager it is closed at the
        end when close is True (default: only sessions it opened)."""
        if session_id is None:
            return Session(self, self.session_open(), True if close is None else close)
        return Session(self, session_id, bool(close))

    @overload
    def generate(self, prompt: Optional[str] = None, *, ids: Optional[Sequence[int]] = None,
            messages: Optional[Sequence[Mapping[str, str]]] = None,
            session: Optional[str] = None, max_tokens: Optional[int] = None,
            stop: Optional[Sequence[str]] = None, temperature: Optional[float] = None,
            top_p: Optional[float] = None, top_k: Optional[int] = None,
            seed: Optional[int] = None, draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[False]" = False,
            extra: Optional[Mapping[str, Any]] = None) -> Result: ...

    @overload
    def generate(self, prompt: Optional[str] = None, *, ids: Optional[Sequence[int]] = None,
            messages: Optional[Sequence[Mapping[str, str]]] = None,
            session: Optional[str] = None, max_tokens: Optional[int] = None,
            stop: Optional[Sequence[str]] = None, temperature: Optional[float] = None,
            top_p: Optional[float] = None, top_k: Optional[int] = None,
            seed: Optional[int] = None, draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[True]",
            extra: Optional[Mapping[str, Any]] = None) -> "Stream": ...

    def generate(self, prompt: Optional[str] = None, *, ids: Optional[Sequence[int]] = None,
                 messages: Optional[Sequence[Mapping[str, str]]] = None,
                 session: Optional[str] = None, max_tokens: Optional[int] = None,
                 stop: Optional[Sequence[str]] = None, temperature: Optional[float] = None,
                 top_p: Optional[float] = None, top_k: Optional[int] = None,
                 seed: Optional[int] = None, draft_tokens: Union[int, str, None] = None,
                 ignore_eos: Optional[bool] = None, stream: bool = False,
                 extra: Optional[Mapping[str, Any]] = None) -> Union[Result, "Stream"]:
        """Generates from exactly one of prompt (text), ids, messages (chat).
        -> Result; with stream=True a Stream: iterate it for Chunks, then
        .result() (or .final) holds the Result."""
        p = _wire.gen_params(prompt, ids, messages, session, stream, extra,
                             max_tokens=max_tokens, stop=stop, temperature=temperature,
                             top_p=top_p, top_k=top_k, seed=seed,
                             draft_tokens=draft_tokens, ignore_eos=ignore_eos)
        return self._gen("generate", p, stream)

    @overload
    def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
            max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
            temperature: Optional[float] = None, top_p: Optional[float] = None,
            top_k: Optional[int] = None, seed: Optional[int] = None,
            draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[False]" = False,
            extra: Optional[Mapping[str, Any]] = None) -> Result: ...

    @overload
    def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
            max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
            temperature: Optional[float] = None, top_p: Optional[float] = None,
            top_k: Optional[int] = None, seed: Optional[int] = None,
            draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[True]",
            extra: Optional[Mapping[str, Any]] = None) -> "Stream": ...

    def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
            max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
            temperature: Optional[float] = None, top_p: Optional[float] = None,
            top_k: Optional[int] = None, seed: Optional[int] = None,
            draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: bool = False,
            extra: Optional[Mapping[str, Any]] = None) -> Union[Result, "Stream"]:
        """Fill-in-the-middle: Result.text is the middle."""
        p = _wire.finish_params({"prefix": prefix, "suffix": suffix}, session, stream, extra,
                                dict(max_tokens=max_tokens, stop=stop,
                                     temperature=temperature, top_p=top_p, top_k=top_k,
                                     seed=seed, draft_tokens=draft_tokens,
                                     ignore_eos=ignore_eos))
        return self._gen("fim", p, stream)

    def _gen(self, method: str, p: Dict[str, Any], stream: bool) -> Union[Result, "Stream"]:
        msgid = self.send_request(method, p, stream=stream)
        if stream:
            return Stream(self, msgid)
        return Result.from_wire(self.wait_response(msgid))

    def cancel(self, msgid: int) -> bool:
        """Cancels this connection's request msgid; -> whether one was running."""
        return bool(self.call("cancel", msgid=msgid).get("cancelled"))

    def tokenize(self, text: str, add_special: Optional[bool] = None) -> List[int]:
        p: Dict[str, Any] = {"text": text}
        if add_special is not None:
            p["add_special"] = add_special
        return _wire.ids_list(self.call("tokenize", p)["ids"])

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self.call("detokenize", ids=[int(i) for i in ids])["text"])

    def stats(self) -> Dict[str, Any]:
        """Server-wide and per-session numbers (docs/protocol.md)."""
        return dict(self.call("stats"))


class Stream:
    """A streaming generate/fim: iterate for Chunks; the Result comes from
    .result() (which drains what is left) or .final after iteration ends.
    Leaving a `with` block early cancels the request."""

    def __init__(self, client: Client, msgid: int) -> None:
        self.client = client
        self.msgid = msgid
        self.final: Optional[Result] = None
        self.chunks: List[Chunk] = []

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        if self.final is not None:
            raise StopIteration
        c = self.client
        q = c._chunks.get(self.msgid)
        c._pump(lambda: bool(q) or self.msgid in c._responses)
        if q:
            chunk = Chunk.from_wire(q.popleft())
            self.chunks.append(chunk)
            return chunk
        self.final = Result.from_wire(c._take_response(self.msgid))
        raise StopIteration

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return "".join(ch.text for ch in self.chunks)

    def result(self) -> Result:
        for _ in self:
            pass
        assert self.final is not None
        return self.final

    def cancel(self) -> bool:
        """Asks the daemon to stop; the stream still ends with a Result
        (finish_reason "cancelled") or RequestCancelledError."""
        if self.final is not None:
            return False
        return self.client.cancel(self.msgid)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if self.final is None and not self.client.closed:
            try:
                self.cancel()
                self.result()
            except MtpdError:
                if et is None:
                    raise


class Session:
    """A daemon session: its KV cache and token history stay between
    requests, so a request that extends the previous one only computes the
    new tokens. generate/fim take the client's options."""

    def __init__(self, client: Client, session_id: str, close_on_exit: bool) -> None:
        self.client = client
        self.id = session_id
        self.close_on_exit = close_on_exit

    def generate(self, prompt: Optional[str] = None, **kw: Any) -> Any:
        return self.client.generate(prompt, session=self.id, **kw)

    def fim(self, prefix: str, suffix: str, **kw: Any) -> Any:
        return self.client.fim(prefix, suffix, session=self.id, **kw)

    def info(self) -> Dict[str, Any]:
        return self.client.session_info(self.id)

    def close(self) -> bool:
        return self.client.session_close(self.id)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if self.close_on_exit and not self.client.closed:
            from .errors import UnknownSessionError
            try:
                self.close()
            except UnknownSessionError:
                pass  # evicted or expired meanwhile: already gone

    def __repr__(self) -> str:
        return f"Session({self.id!r})"


__all__ = ["Client", "Stream", "Session", "Result", "Chunk", "GenStats"]
