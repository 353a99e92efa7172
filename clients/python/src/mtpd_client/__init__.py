"""mtpd_client: Python clients of `mtpd serve` (docs/protocol.md).

    from mtpd_client import Client
    with Client() as c:                      # the daemon's default socket
        with c.session() as s:               # KV cache kept between requests
            r = s.generate("def fib(n):", max_tokens=64)
            print(r.text, r.stats["prompt_tokens_reused"])

AsyncClient is the asyncio twin (several requests in flight on one
connection). Errors are MtpdError subclasses, one per protocol error code.
"""
from ._wire import default_address, parse_address
from .aio import AsyncClient, AsyncSession, AsyncStream
from .client import Client, Session, Stream
from .errors import (ERRORS, BadParamsError, BusyError, ConnectionClosedError,
                     InternalError, KVBudgetError, MtpdError, OverLimitError,
                     OverloadedError, ProtocolError, RequestCancelledError,
                     ShuttingDownError, UnauthorizedError, UnknownMethodError,
                     UnknownSessionError)
from .types import Chunk, GenStats, HelloInfo, Result

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = [
    "Client", "Session", "Stream", "AsyncClient", "AsyncSession", "AsyncStream",
    "Result", "Chunk", "GenStats", "HelloInfo", "default_address", "parse_address",
    "MtpdError", "UnknownMethodError", "BadParamsError", "UnknownSessionError",
    "OverLimitError", "KVBudgetError", "OverloadedError", "BusyError",
    "RequestCancelledError", "ShuttingDownError", "UnauthorizedError", "ProtocolError",
    "InternalError", "ConnectionClosedError", "ERRORS", "PROTOCOL_VERSION",
]
