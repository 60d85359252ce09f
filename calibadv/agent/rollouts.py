"""Rollouts of questions and their scores: the agent protocol applied to a batch of questions.

Shared by the local trainer, SFT's start-point check and evaluation: build each question's
prompt ids, run :func:`calibadv.agent.protocol.run_batch` ``group_size`` times per question and
score the finished trajectories with :func:`calibadv.answer_score.compute_score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from calibadv.agent.protocol import AgentState, run_batch
from calibadv.agent.types import AgentConfig, GenerateFn, SearchFn, Trajectory

if TYPE_CHECKING:
    from calibadv.data.questions import Question

__all__ = ["agent_config", "method_flags", "prompt_token_ids", "rollout", "score"]


def agent_config(spec: Any, prethink: bool) -> AgentConfig:
    a = spec.agent
    return AgentConfig(
        max_turns=a.max_turns,
        max_tokens_per_turn=a.max_tokens_per_turn,
        max_response_tokens=a.max_response_tokens,
        invalid_action=a.invalid_action,
        prethink=prethink,
    )


def method_flags(method: dict[str, Any]) -> tuple[bool, bool]:
    """(prethink, require_search) of a resolved method preset."""
    return bool(method.get("prethink", False)), bool(method.get("require_search", False))


def prompt_token_ids(tokenizer: Any, question: Question, prethink: bool) -> list[int]:
    from calibadv.data.prompt import prompt_ids

    return list(prompt_ids(tokenizer, question.messages, prethink))


def rollout(
    questions: Sequence[Question],
    tokenizer: Any,
    config: AgentConfig,
    generate_fn: GenerateFn,
    search_fn: SearchFn,
    group_size: int = 1,
    progress: Any = None,
) -> list[Trajectory]:
    """``group_size`` rollouts per question, grouped contiguously (question-major order)."""
    states = []
    for q in questions:
        ids = prompt_token_ids(tokenizer, q, config.prethink)
        states.extend(AgentState(ids, tokenizer, config) for _ in range(group_size))
    return run_batch(states, generate_fn, search_fn, progress=progress)


def score(traj: Trajectory, question: Question, prethink: bool, require_search: bool) -> None:
    """Fill the reward fields of ``traj`` in place (gated F1, F1, EM, format)."""
    from calibadv.answer_score import compute_score

    result = compute_score(
        question.data_source,
        traj.response_text,
        {"target": question.golden_answers},
        None,
        prethink=prethink,
        require_search=require_search,
    )
    traj.reward = float(result["score"])
    traj.f1 = float(result["f1"])
    traj.em = float(result["em"])
    traj.format_ok = bool(result["format_ok"])
