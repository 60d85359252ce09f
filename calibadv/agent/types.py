"""Data passed between the protocol and the engines that drive it.

The protocol never calls a model itself: it emits :class:`GenerationRequest` objects and
consumes :class:`Generation` results. Any engine (HF ``generate``, vLLM, verl's async server
manager, a scripted test double) that maps requests to generations can drive it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "eos"]
StopReason = Literal["answer", "max_turns", "invalid", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """Continue ``prompt_ids`` for at most ``max_tokens`` tokens, stopping after any of ``stop``.

    The stop string is part of the returned tokens (the protocol needs ``</search>`` in the
    response so that the format check sees it).
    """

    prompt_ids: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...]


@dataclass
class Generation:
    """What an engine returns for one request: tokens exactly as sampled, never re-tokenised.

    ``logprobs[i]`` is the log-probability of ``token_ids[i]`` under the model that sampled it
    (raw distribution at temperature 1; engines document deviations). ``finish_reason`` is
    ``stop`` (a stop string ended the text), ``eos`` (end-of-sequence token) or ``length``.
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason


GenerateFn = Callable[[Sequence[GenerationRequest]], list[Generation]]


class PassageLike(Protocol):
    id: str
    title: str
    text: str


SearchFn = Callable[[Sequence[str]], list[list[Any]]]


class TokenizerLike(Protocol):
    """The two tokenizer calls the protocol needs (HF tokenizers satisfy it)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass
class AgentConfig:
    """Limits and switches of one rollout (mirrors ``RunSpec.agent`` plus the method's PreThink)."""

    max_turns: int = 4  # searches allowed; one more search request ends the rollout
    max_tokens_per_turn: int = 1024
    max_response_tokens: int = 4096  # generated + observation tokens
    invalid_action: Literal["end", "message"] = "end"
    prethink: bool = False

    def __post_init__(self) -> None:
        if self.max_turns < 0:
            raise ValueError(f"agent.max_turns must be >= 0, got {self.max_turns}")
        if self.max_tokens_per_turn < 1 or self.max_response_tokens < 1:
            raise ValueError("agent.max_tokens_per_turn and max_response_tokens must be >= 1")
        if self.invalid_action not in ("end", "message"):
            raise ValueError(
                f"agent.invalid_action: {self.invalid_action!r} is not 'end' or 'message'"
            )


@dataclass
class Trajectory:
    """One rollout; the field meanings are fixed in docs/design.md."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_spans: list[list[int]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    doc_ids: list[list[str]] = field(default_factory=list)
    thinks: list[str] = field(default_factory=list)
    answer: str | None = None
    answered: bool = False
    response_text: str = ""
    stop_reason: StopReason = "length"
    reward: float = 0.0
    f1: float = 0.0
    em: float = 0.0
    format_ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_searches(self) -> int:
        """Searches that actually retrieved (intermediate steps with a non-empty query)."""
        return sum(1 for q in self.queries if q)
