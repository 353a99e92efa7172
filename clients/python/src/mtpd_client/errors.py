"""One exception class per error code of docs/protocol.md.

Every error the daemon returns is raised as a subclass of MtpdError that
carries the code, the message, and (for bad_params / over_limit) the field
or limit it names. Codes this client does not know become MtpdError itself.
"""
from typing import Any, Dict, Mapping, Optional, Type


class MtpdError(Exception):
    """An error answer of the daemon (or a client-side transport failure)."""

    code: str = ""

    def __init__(self, message: str = "", code: Optional[str] = None,
                 field: Optional[str] = None, limit: Optional[str] = None,
                 data: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.field = field
        self.limit = limit
        self.data: Dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        extra = ""
        if self.field:
            extra = f" (field {self.field})"
        elif self.limit:
            extra = f" (limit {self.limit})"
        return f"{self.code}: {self.message}{extra}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class UnknownMethodError(MtpdError):
    code = "unknown_method"


class BadParamsError(MtpdError):
    """A field is missing, has the wrong type or is out of range (.field)."""
    code = "bad_params"


class UnknownSessionError(MtpdError):
    code = "unknown_session"


class OverLimitError(MtpdError):
    """Over a limit; .limit names it (prompt_tokens, max_tokens, ...)."""
    code = "over_limit"


class KVBudgetError(MtpdError):
    code = "kv_budget"


class OverloadedError(MtpdError):
    """The daemon's queue is full; retry later."""
    code = "overloaded"


class BusyError(MtpdError):
    """The session is already running a request."""
    code = "busy"


class RequestCancelledError(MtpdError):
    """Cancelled before it produced anything (code "cancelled"). Named so
    it does not shadow asyncio.CancelledError."""
    code = "cancelled"


class ShuttingDownError(MtpdError):
    code = "shutting_down"


class UnauthorizedError(MtpdError):
    code = "unauthorized"


class ProtocolError(MtpdError):
    """The daemon closed the connection over a framing error, or it sent
    something that is not msgpack-rpc."""
    code = "protocol"


class InternalError(MtpdError):
    code = "internal"


class ConnectionClosedError(MtpdError, ConnectionError):
    """Client side: the connection ended before the answer came."""
    code = "connection_closed"


ERRORS: Dict[str, Type[MtpdError]] = {
    c.code: c for c in (UnknownMethodError, BadParamsError, UnknownSessionError,
                        OverLimitError, KVBudgetError, OverloadedError, BusyError,
                        RequestCancelledError, ShuttingDownError, UnauthorizedError,
                        ProtocolError, InternalError)
}


def error_from_wire(err: Any) -> MtpdError:
    """The exception for an error object of a response (a map with code and
    message; anything else is reported as it is)."""
    if isinstance(err, Mapping):
        code = str(err.get("code", "internal"))
        msg = str(err.get("message", ""))
        cls = ERRORS.get(code, MtpdError)
        field = err.get("field")
        limit = err.get("limit")
        return cls(msg, code=code, field=field if isinstance(field, str) else None,
                   limit=limit if isinstance(limit, str) else None, data=err)
    return MtpdError(repr(err), code="internal")
