"""The asyncio client: one connection, any number of requests in flight
(matched by msgid; responses may come out of order), a reader task that
dispatches responses and stream chunks."""
import asyncio
import socket
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence, Union, overload

from . import _wire
from .errors import (ConnectionClosedError, MtpdError, ProtocolError,
                     UnknownSessionError, error_from_wire)
from .types import Chunk, HelloInfo, Result

from typing import Literal

_DONE = object()


class AsyncClient:
    """    async with AsyncClient("unix:/tmp/mtpd.sock") as c:
            r1, r2 = await asyncio.gather(c.generate("a", max_tokens=8),
                                          c.generate("b", max_tokens=8))
            async for chunk in await c.generate("def f(", stream=True):
                print(chunk.text, end="")

    or `c = await AsyncClient.connect(address)` ... `await c.close()`.
    Arguments as Client's."""

    def __init__(self, address: Optional[str] = None, *, token: Optional[str] = None,
                 connect_timeout: Optional[float] = 10.0) -> None:
        self.address = address or _wire.default_address()
        self._token = token
        self._connect_timeout = connect_timeout
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._next_id = 1
        self._futures: Dict[int, "asyncio.Future[Any]"] = {}
        self._queues: Dict[int, "asyncio.Queue[Any]"] = {}
        self._dead: Optional[MtpdError] = None
        self.hello_info: Optional[HelloInfo] = None

    @classmethod
    async def connect(cls, address: Optional[str] = None, **kw: Any) -> "AsyncClient":
        c = cls(address, **kw)
        await c.open()
        return c

    async def open(self) -> None:
        kind, where = _wire.parse_address(self.address)
        if isinstance(where, str):
            coro = asyncio.open_unix_connection(where)
        else:
            coro = asyncio.open_connection(where[0], where[1])
        reader, writer = await asyncio.wait_for(coro, self._connect_timeout)
        self._reader, self._writer = reader, writer
        if kind == "tcp":
            s = writer.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.ensure_future(self._read_loop())
        if self._token is not None:
            try:
                await self.hello(token=self._token)
            except BaseException:
                await self.close()
                raise

    async def __aenter__(self) -> "AsyncClient":
        if self._writer is None:
            await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        self._fail(ConnectionClosedError("the client closed the connection"))
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    @property
    def closed(self) -> bool:
        return self._dead is not None

    def _fail(self, exc: MtpdError) -> None:
        """Ends every waiting request with exc (the connection is gone)."""
        if self._dead is None:
            self._dead = exc
        for f in self._futures.values():
            if not f.done():
                f.set_exception(exc)
        for q in self._queues.values():
            q.put_nowait((_DONE, exc, None))
        self._futures.clear()
        self._queues.clear()
        if self._writer is not None:
            self._writer.close()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        unpacker = _wire.new_unpacker()
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    self._fail(ConnectionClosedError("the daemon closed the connection"))
                    return
                unpacker.feed(data)
                for frame in unpacker:
                    self._dispatch(frame)
        except asyncio.CancelledError:
            raise
        except MtpdError as e:
            self._fail(e)
        except ValueError as e:
            self._fail(ProtocolError(f"bad msgpack from the daemon: {e}"))
        except (OSError, ConnectionError) as e:
            self._fail(ConnectionClosedError(f"receive failed: {e}"))

    def _dispatch(self, frame: Any) -> None:
        kind, a, b, c = _wire.classify(frame)
        if kind == _wire.RESPONSE:
            f = self._futures.pop(a, None)
            if f is not None and not f.done():
                f.set_result((b, c))
            q = self._queues.pop(a, None)
            if q is not None:
                q.put_nowait((_DONE, b, c))
            return
        body = _wire.notification_body(b)
        if a == "generate.chunk":
            q = self._queues.get(body.get("msgid"))  # type: ignore[arg-type]
            if q is not None:
                q.put_nowait(body)
        elif a == "error":
            err = error_from_wire(body)
            raise ProtocolError(err.message, code=err.code, data=err.data)

    async def _send(self, method: str, params: Optional[Mapping[str, Any]],
                    stream: bool) -> int:
        if self._dead is not None:
            raise self._dead
        if self._writer is None:
            await self.open()
        msgid = self._next_id
        self._next_id = (self._next_id + 1) % _wire.MSGID_MOD
        if stream:
            self._queues[msgid] = asyncio.Queue()
        else:
            self._futures[msgid] = asyncio.get_running_loop().create_future()
        assert self._writer is not None
        try:
            self._writer.write(_wire.request_frame(msgid, method, params or {}))
            await self._writer.drain()
        except (OSError, ConnectionError) as e:
            self._fail(ConnectionClosedError(f"send failed: {e}"))
            raise self._dead from e  # type: ignore[misc]
        return msgid

    async def call(self, method: str, params: Optional[Mapping[str, Any]] = None,
                   **fields: Any) -> Any:
        """Any method by name; requests from several tasks run together."""
        p = dict(params or {})
        p.update(fields)
        msgid = await self._send(method, p, False)
        f = self._futures.get(msgid)
        if f is None:  # failed meanwhile
            raise self._dead or ConnectionClosedError("connection lost")
        err, res = await f
        if err is not None:
            raise error_from_wire(err)
        return res

    async def hello(self, token: Optional[str] = None) -> HelloInfo:
        info: HelloInfo = await self.call("hello", {"token": token} if token is not None else {})
        self.hello_info = info
        return info

    async def session_open(self) -> str:
        return str((await self.call("session.open"))["session"])

    async def session_close(self, session: str) -> bool:
        return bool((await self.call("session.close", session=session)).get("closed", True))

    async def session_info(self, session: str) -> Dict[str, Any]:
        return dict(await self.call("session.info", session=session))

    def session(self, session_id: Optional[str] = None,
                close: Optional[bool] = None) -> "AsyncSession":
        """`async with client.session() as s:` opens a session on entry and
        closes it on exit (attached ones, given session_id, stay open unless
        close=True)."""
        return AsyncSession(self, session_id,
                            (session_id is None) if close is None else close)

    @overload
    async def generate(self, prompt: Optional[str] = None, *, ids: Optional[Sequence[int]] = None,
            messages: Optional[Sequence[Mapping[str, str]]] = None,
            session: Optional[str] = None, max_tokens: Optional[int] = None,
            stop: Optional[Sequence[str]] = None, temperature: Optional[float] = None,
            top_p: Optional[float] = None, top_k: Optional[int] = None,
            seed: Optional[int] = None, draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[False]" = False,
            extra: Optional[Mapping[str, Any]] = None) -> Result: ...

    @overload
    async def generate(self, prompt: Optional[str] = None, *, ids: Optional[Sequence[int]] = None,
            messages: Optional[Sequence[Mapping[str, str]]] = None,
            session: Optional[str] = None, max_tokens: Optional[int] = None,
            stop: Optional[Sequence[str]] = None, temperature: Optional[float] = None,
            top_p: Optional[float] = None, top_k: Optional[int] = None,
            seed: Optional[int] = None, draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[True]",
            extra: Optional[Mapping[str, Any]] = None) -> "AsyncStream": ...

    async def generate(self, prompt: Optional[str] = None, *,
                       ids: Optional[Sequence[int]] = None,
                       messages: Optional[Sequence[Mapping[str, str]]] = None,
                       session: Optional[str] = None, max_tokens: Optional[int] = None,
                       stop: Optional[Sequence[str]] = None,
                       temperature: Optional[float] = None, top_p: Optional[float] = None,
                       top_k: Optional[int] = None, seed: Optional[int] = None,
                       draft_tokens: Union[int, str, None] = None,
                       ignore_eos: Optional[bool] = None, stream: bool = False,
                       extra: Optional[Mapping[str, Any]] = None
                       ) -> Union[Result, "AsyncStream"]:
        """As Client.generate; with stream=True -> an AsyncStream (the
        request is already sent): `async for chunk in stream`, then
        `await stream.result()`."""
        p = _wire.gen_params(prompt, ids, messages, session, stream, extra,
                             max_tokens=max_tokens, stop=stop, temperature=temperature,
                             top_p=top_p, top_k=top_k, seed=seed,
                             draft_tokens=draft_tokens, ignore_eos=ignore_eos)
        return await self._gen("generate", p, stream)

    @overload
    async def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
            max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
            temperature: Optional[float] = None, top_p: Optional[float] = None,
            top_k: Optional[int] = None, seed: Optional[int] = None,
            draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[False]" = False,
            extra: Optional[Mapping[str, Any]] = None) -> Result: ...

    @overload
    async def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
            max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
            temperature: Optional[float] = None, top_p: Optional[float] = None,
            top_k: Optional[int] = None, seed: Optional[int] = None,
            draft_tokens: Union[int, str, None] = None,
            ignore_eos: Optional[bool] = None, stream: "Literal[True]",
            extra: Optional[Mapping[str, Any]] = None) -> "AsyncStream": ...

    async def fim(self, prefix: str, suffix: str, *, session: Optional[str] = None,
                  max_tokens: Optional[int] = None, stop: Optional[Sequence[str]] = None,
                  temperature: Optional[float] = None, top_p: Optional[float] = None,
                  top_k: Optional[int] = None, seed: Optional[int] = None,
                  draft_tokens: Union[int, str, None] = None,
                  ignore_eos: Optional[bool] = None, stream: bool = False,
                  extra: Optional[Mapping[str, Any]] = None
                  ) -> Union[Result, "AsyncStream"]:
        p = _wire.finish_params({"prefix": prefix, "suffix": suffix}, session, stream, extra,
                                dict(max_tokens=max_tokens, stop=stop,
                                     temperature=temperature, top_p=top_p, top_k=top_k,
                                     seed=seed, draft_tokens=draft_tokens,
                                     ignore_eos=ignore_eos))
        return await self._gen("fim", p, stream)

    async def _gen(self, method: str, p: Dict[str, Any],
                   stream: bool) -> Union[Result, "AsyncStream"]:
        if stream:
            msgid = await self._send(method, p, True)
            return AsyncStream(self, msgid, self._queues.get(msgid))
        return Result.from_wire(await self.call(method, p))

    async def cancel(self, msgid: int) -> bool:
        return bool((await self.call("cancel", msgid=msgid)).get("cancelled"))

    async def tokenize(self, text: str, add_special: Optional[bool] = None) -> List[int]:
        p: Dict[str, Any] = {"text": text}
        if add_special is not None:
            p["add_special"] = add_special
        return _wire.ids_list((await self.call("tokenize", p))["ids"])

    async def detokenize(self, ids: Sequence[int]) -> str:
        return str((await self.call("detokenize", ids=[int(i) for i in ids]))["text"])

    async def stats(self) -> Dict[str, Any]:
        return dict(await self.call("stats"))


class AsyncStream:
    """`async for chunk in stream` yields Chunks; `await stream.result()`
    drains the rest and returns the Result (also .final afterwards)."""

    def __init__(self, client: AsyncClient, msgid: int,
                 queue: "Optional[asyncio.Queue[Any]]") -> None:
        self.client = client
        self.msgid = msgid
        self._queue = queue
        self.final: Optional[Result] = None
        self.chunks: List[Chunk] = []

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        if self.final is not None:
            raise StopAsyncIteration
        if self._queue is None:
            raise self.client._dead or ConnectionClosedError("connection lost")
        item = await self._queue.get()
        if isinstance(item, tuple) and item and item[0] is _DONE:
            _, err, res = item
            if isinstance(err, MtpdError):
                raise err
            if err is not None:
                raise error_from_wire(err)
            self.final = Result.from_wire(res)
            raise StopAsyncIteration
        chunk = Chunk.from_wire(item)
        self.chunks.append(chunk)
        return chunk

    @property
    def text(self) -> str:
        return "".join(ch.text for ch in self.chunks)

    async def result(self) -> Result:
        async for _ in self:
            pass
        assert self.final is not None
        return self.final

    async def cancel(self) -> bool:
        if self.final is not None:
            return False
        return await self.client.cancel(self.msgid)


class AsyncSession:
    def __init__(self, client: AsyncClient, session_id: Optional[str],
                 close_on_exit: bool) -> None:
        self.client = client
        self.id: Optional[str] = session_id
        self.close_on_exit = close_on_exit

    async def open(self) -> "AsyncSession":
        if self.id is None:
            self.id = await self.client.session_open()
        return self

    async def __aenter__(self) -> "AsyncSession":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        if self.close_on_exit and self.id is not None and not self.client.closed:
            try:
                await self.close()
            except UnknownSessionError:
                pass

    def _sid(self) -> str:
        if self.id is None:
            raise RuntimeError("session not opened (use `async with` or await open())")
        return self.id

    async def generate(self, prompt: Optional[str] = None, **kw: Any) -> Any:
        return await self.client.generate(prompt, session=self._sid(), **kw)

    async def fim(self, prefix: str, suffix: str, **kw: Any) -> Any:
        return await self.client.fim(prefix, suffix, session=self._sid(), **kw)

    async def info(self) -> Dict[str, Any]:
        return await self.client.session_info(self._sid())

    async def close(self) -> bool:
        return await self.client.session_close(self._sid())
