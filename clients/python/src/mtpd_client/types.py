"""Result types: what generate/fim return and what a stream yields.

Server answers that are plain maps (hello, stats, session.info) are returned
as dicts; their TypedDicts here document the fields of docs/protocol.md.
"""
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Union

if sys.version_info >= (3, 8):
    from typing import TypedDict
else:  # pragma: no cover
    TypedDict = dict


class ModelInfo(TypedDict, total=False):
    name: str
    vocab_size: int
    context_length: int
    mtp_modules: int
    kv_bytes_per_token: int


class Limits(TypedDict, total=False):
    max_frame: int
    max_sessions: int
    max_tokens: int
    kv_budget_bytes: int


class HelloInfo(TypedDict, total=False):
    server: str
    version: str
    protocol: int
    model: ModelInfo
    limits: Limits


class GenStats(TypedDict, total=False):
    """The per-request STATS of docs/protocol.md (mtpd generate --json's
    stats plus prompt_tokens_reused and queue_seconds)."""
    prompt_tokens: int
    generated_tokens: int
    verify_passes: int
    drafts: int
    drafted_tokens: int
    accepted_tokens: int
    acceptance_rate: float
    acceptance_by_position: List[float]
    acceptance_by_position_conditional: List[float]
    mean_accepted_length: float
    tokens_per_pass: float
    k_histogram: List[int]
    auto_pauses: int
    prefill_seconds: float
    decode_seconds: float
    draft_seconds: float
    verify_seconds: float
    refill_seconds: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    prompt_tokens_reused: int
    queue_seconds: float


@dataclass
class Result:
    """The answer of generate / fim."""
    ids: List[int]
    text: str
    finish_reason: str
    stats: GenStats = field(default_factory=lambda: GenStats())
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> "Result":
        return cls(ids=list(r.get("ids") or []), text=str(r.get("text") or ""),
                   finish_reason=str(r.get("finish_reason") or ""),
                   stats=GenStats(**(r.get("stats") or {})),  # type: ignore[typeddict-item]
                   raw=dict(r))


@dataclass
class Chunk:
    """One streamed piece of a generation (a generate.chunk notification).
    `text` never splits a UTF-8 character and may be empty while ids are
    not (text that could still become a stop string is held back)."""
    text: str
    ids: List[int]

    @classmethod
    def from_wire(cls, p: Mapping[str, Any]) -> "Chunk":
        return cls(text=str(p.get("text") or ""), ids=list(p.get("ids") or []))


StreamItem = Union[Chunk, Result]
