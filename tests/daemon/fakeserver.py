"""A small msgpack-rpc server that follows docs/protocol.md with a toy
model, for the client libraries' own tests (framing, multiplexing,
streaming, cancel, errors) without the real daemon.

The toy model: text is encoded one id per byte (ids = UTF-8 bytes + 10,
BOS 0 first unless add_special is false); generation appends, one token
per `delay` seconds, the id of letter 'a' + (context length % 26). A
request with the field `fake_error: CODE` answers that error (the real
daemon ignores unknown fields), `fake_protocol_error: true` makes the server
send the protocol error notification and close the connection.
"""
import os
import secrets
import socket
import threading
import time

import msgpack

BOS = 0


def encode(text, add_special=True):
    return ([BOS] if add_special else []) + [b + 10 for b in text.encode()]


def decode(ids):
    return bytes(i - 10 for i in ids if i >= 10).decode("utf-8", "replace")


class FakeServer:
    def __init__(self, path, delay=0.002):
        self.path = path
        self.delay = delay
        self.sessions = {}  # id -> history ids
        self.lock = threading.Lock()
        self.requests = 0
        self.cancelled = 0  # cancel requests that stopped a running generation
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(path):
            os.unlink(path)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "unix:" + self.path

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=Conn(self, conn).run, daemon=True).start()


class Conn:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.wlock = threading.Lock()
        self.running = {}  # msgid -> cancel Event
        self.alive = True

    def send(self, obj):
        data = msgpack.packb(obj, use_bin_type=True)
        with self.wlock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.alive = False

    def run(self):
        unp = msgpack.Unpacker(raw=False)
        try:
            while self.alive:
                data = self.sock.recv(65536)
                if not data:
                    break
                unp.feed(data)
                try:
                    frames = list(unp)
                except ValueError:
                    self.protocol_error("not msgpack")
                    return
                for f in frames:
                    if not (isinstance(f, list) and len(f) == 4 and f[0] == 0):
                        if isinstance(f, list) and len(f) == 3 and f[0] == 2:
                            continue
                        self.protocol_error("not a msgpack-rpc request")
                        return
                    threading.Thread(target=self.handle, args=(f[1], f[2], f[3]),
                                     daemon=True).start()
        except OSError:
            pass
        finally:
            self.alive = False
            for ev in list(self.running.values()):
                ev.set()
            with self.wlock:
                self.sock.close()

    def protocol_error(self, msg):
        self.send([2, "error", [{"code": "protocol", "message": msg}]])
        self.alive = False
        self.sock.close()

    def handle(self, msgid, method, params):
        self.server.requests += 1
        p = params[0] if params else {}
        if not isinstance(p, dict):
            return self.error(msgid, "bad_params", "params must hold one map", field="params")
        if p.get("fake_protocol_error"):
            return self.protocol_error("fake")
        if p.get("fake_error"):
            return self.error(msgid, p["fake_error"], "fake error")
        fn = getattr(self, "m_" + method.replace(".", "_"), None)
        if fn is None:
            return self.error(msgid, "unknown_method", f"no method {method}")
        try:
            res = fn(msgid, p)
        except Err as e:
            return self.send([1, msgid, e.obj, None])
        self.send([1, msgid, None, res])

    def error(self, msgid, code, msg, **kw):
        self.send([1, msgid, dict(code=code, message=msg, **kw), None])

    # methods
    def m_hello(self, msgid, p):
        return {"server": "mtpd", "version": "fake", "protocol": 1,
                "model": {"name": "fake", "vocab_size": 266, "context_length": 4096,
                          "mtp_modules": 1, "kv_bytes_per_token": 0},
                "limits": {"max_frame": 16 << 20, "max_sessions": 64,
                           "max_tokens": 4096, "kv_budget_bytes": 0}}

    def m_session_open(self, msgid, p):
        sid = secrets.token_hex(16)
        with self.server.lock:
            self.server.sessions[sid] = []
        return {"session": sid}

    def _session(self, p, required=True):
        sid = p.get("session")
        if sid is None and not required:
            return None
        if not isinstance(sid, str):
            raise Err("bad_params", "session: expected str", field="session")
        if sid not in self.server.sessions:
            raise Err("unknown_session", f"no session {sid}")
        return sid

    def m_session_close(self, msgid, p):
        sid = self._session(p)
        with self.server.lock:
            del self.server.sessions[sid]
        return {"closed": True}

    def m_session_info(self, msgid, p):
        sid = self._session(p)
        return {"session": sid, "tokens": len(self.server.sessions[sid]), "kv_bytes": 0,
                "last_use": time.time(), "busy": False, "requests": 0, "stats": {}}

    def m_tokenize(self, msgid, p):
        if not isinstance(p.get("text"), str):
            raise Err("bad_params", "text: expected str", field="text")
        return {"ids": encode(p["text"], p.get("add_special", True))}

    def m_detokenize(self, msgid, p):
        return {"ids": None, "text": decode(p.get("ids") or [])}

    def m_stats(self, msgid, p):
        return {"requests": self.server.requests, "sessions": len(self.server.sessions)}

    def m_cancel(self, msgid, p):
        ev = self.running.get(p.get("msgid"))
        if ev is None:
            return {"cancelled": False}
        ev.set()
        self.server.cancelled += 1
        return {"cancelled": True}

    def m_fim(self, msgid, p):
        for f in ("prefix", "suffix"):
            if not isinstance(p.get(f), str):
                raise Err("bad_params", f"{f}: expected str", field=f)
        ids = [3] + encode(p["prefix"], False) + [2] + encode(p["suffix"], False) + [4]
        return self._gen(msgid, p, ids)

    def m_generate(self, msgid, p):
        if "prompt" in p:
            if not isinstance(p["prompt"], str):
                raise Err("bad_params", "prompt: expected str", field="prompt")
            ids = encode(p["prompt"])
        elif "ids" in p:
            ids = list(p["ids"])
        else:
            raise Err("bad_params", "prompt: one of prompt, ids, messages", field="prompt")
        return self._gen(msgid, p, ids)

    def _gen(self, msgid, p, ids):
        n = p.get("max_tokens", 256)
        if not isinstance(n, int) or n < 1:
            raise Err("bad_params", "max_tokens: expected int >= 1", field="max_tokens")
        if n > 4096:
            raise Err("over_limit", "max_tokens over the context", limit="max_tokens")
        sid = self._session(p, required=False)
        ev = threading.Event()
        self.running[msgid] = ev
        out, finish = [], "length"
        try:
            ctx = list(ids)
            for _ in range(n):
                if ev.is_set():
                    finish = "cancelled"
                    break
                time.sleep(self.server.delay)
                t = 10 + ord("a") + len(ctx) % 26
                ctx.append(t)
                out.append(t)
                if p.get("stream"):
                    self.send([2, "generate.chunk", [{"msgid": msgid, "ids": [t],
                                                      "text": decode([t])}]])
        finally:
            del self.running[msgid]
        reused = 0
        if sid is not None and sid in self.server.sessions:  # not closed meanwhile
            hist = self.server.sessions[sid]
            while reused < min(len(hist), len(ids)) and hist[reused] == ids[reused]:
                reused += 1
            self.server.sessions[sid] = ctx
        return {"ids": out, "text": decode(out), "finish_reason": finish,
                "stats": {"prompt_tokens": len(ids), "generated_tokens": len(out),
                          "prompt_tokens_reused": reused}}


class Err(Exception):
    def __init__(self, code, message, **kw):
        super().__init__(message)
        self.obj = dict(code=code, message=message, **kw)
