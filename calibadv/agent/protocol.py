"""The Search-R1 protocol as a per-rollout state machine, independent of any engine.

One rollout alternates model turns and observations::

    [<think>] … </think><search> q </search>   → observation "<information>…</information>"
    …                                           (at most ``max_turns`` searches)
    … </think><answer> a </answer>              → done

Drive it with :func:`run_batch` (synchronous, batched) or step by step from an async loop::

    state = AgentState(prompt_ids, tokenizer, config)
    while (req := state.next_request()) is not None:
        action = state.consume(await engine(req))
        if action.kind == "search":
            state.observe(await search(action.query))
    traj = state.trajectory()

A rollout can be resumed from an intermediate state: ``state.fork(n)`` is a new state whose
response is exactly the first ``n`` turns of ``state`` with their observations (same tokens,
masks and log-probs), ready to generate turn ``n`` afresh. Tree rollouts (Tree-GRPO) grow
their branches this way, whatever engine drives the states.

Generated tokens are stored exactly as the engine returned them; only observation text is
tokenised here (with ``add_special_tokens=False``) and it is masked out of the loss.

Forced answer after ``max_turns`` searches: the next turn must be an answer. A further search
request is not executed; the rollout ends unanswered with ``stop_reason="max_turns"`` (its
format check fails, so its reward is 0). This is the behaviour of Search-R1's final
``do_search=False`` turn without spending another generation on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from calibadv.agent.types import (
    AgentConfig,
    GenerateFn,
    Generation,
    GenerationRequest,
    SearchFn,
    TokenizerLike,
    Trajectory,
)

STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")

INVALID_ACTION_MESSAGE = (
    "\nThat action was not valid. To search, write the query between <search> and "
    "</search>. To give the final answer, write it between <answer> and </answer>. "
    "Try again.\n"
)

_SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class Action:
    """How the protocol read one generated turn."""

    kind: Literal["search", "answer", "invalid", "stop"]
    query: str = ""


def format_observation(passages: Sequence[Any], prethink: bool) -> str:
    """The masked text appended after a search (docs/design.md, "Observation")."""
    from calibadv.retrieval.client import format_passages

    text = f"\n\n<information>{format_passages(list(passages))}</information>\n\n"
    return text + "<think>" if prethink else text


def extract_think(turn_text: str) -> str:
    """The think text of one turn; with PreThink the turn opens inside the think."""
    end = turn_text.find("</think>")
    if end < 0:
        return ""
    start = turn_text.rfind("<think>", 0, end)
    start = 0 if start < 0 else start + len("<think>")
    return turn_text[start:end].strip()


class AgentState:
    """One rollout in progress. Not thread-safe; one state per rollout."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        tokenizer: TokenizerLike,
        config: AgentConfig,
        stop: Sequence[str] = STOP_STRINGS,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.traj = Trajectory(prompt_ids=list(prompt_ids))
        self.done = False
        self.pending_query: str | None = None
        self.searches = 0
        self._text_parts: list[str] = []
        self._turn_parts: list[int] = []  # len(_text_parts) when each turn started

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def response_len(self) -> int:
        return len(self.traj.response_ids)

    @property
    def budget_left(self) -> int:
        return self.config.max_response_tokens - self.response_len

    def _finish(self, reason: str) -> None:
        self.done = True
        self.traj.stop_reason = reason  # type: ignore[assignment]

    def _append_masked(self, text: str) -> bool:
        """Append observation tokens; False (and nothing appended) when they do not fit."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if len(ids) >= self.budget_left:  # leave room for at least one generated token
            return False
        self.traj.response_ids.extend(ids)
        self.traj.loss_mask.extend([0] * len(ids))
        self.traj.logprobs.extend([0.0] * len(ids))
        self._text_parts.append(text)
        return True

    def _intermediate(self, query: str, doc_ids: list[str]) -> None:
        self.traj.queries.append(query)
        self.traj.doc_ids.append(doc_ids)

    # -- protocol ----------------------------------------------------------------------
    def next_request(self) -> GenerationRequest | None:
        """The next generation to run, or None when the rollout is finished."""
        if self.done:
            return None
        if self.pending_query is not None:
            raise RuntimeError("observe() the pending search before requesting a generation")
        max_tokens = min(self.config.max_tokens_per_turn, self.budget_left)
        if max_tokens <= 0:
            self._finish("length")
            return None
        ids = tuple(self.traj.prompt_ids) + tuple(self.traj.response_ids)
        return GenerationRequest(prompt_ids=ids, max_tokens=max_tokens, stop=self.stop)

    def consume(self, gen: Generation) -> Action:
        """Record one generated turn and decide what happens next."""
        if self.done or self.pending_query is not None:
            raise RuntimeError("consume() called on a finished rollout or before observe()")
        if len(gen.logprobs) != len(gen.token_ids):
            raise ValueError(
                f"generation has {len(gen.token_ids)} tokens but {len(gen.logprobs)} log-probs"
            )
        t = self.traj
        start = len(t.response_ids)
        t.response_ids.extend(gen.token_ids)
        t.loss_mask.extend([1] * len(gen.token_ids))
        t.logprobs.extend(float(x) for x in gen.logprobs)
        t.turn_spans.append([start, len(t.response_ids)])
        self._turn_parts.append(len(self._text_parts))
        self._text_parts.append(gen.text)
        t.thinks.append(extract_think(gen.text))
        tail = gen.text.rstrip()

        if tail.endswith("</answer>"):
            answers = _ANSWER_RE.findall(gen.text)
            t.answer = answers[-1].strip() if answers else None
            t.answered = True
            self._finish("answer")
            return Action("answer")
        if tail.endswith("</search>"):
            queries = _SEARCH_RE.findall(gen.text)
            query = queries[-1].strip() if queries else ""
            if query:
                if self.searches >= self.config.max_turns:
                    self._intermediate("", [])
                    self._finish("max_turns")
                    return Action("stop")
                self.searches += 1
                self.pending_query = query
                return Action("search", query)
        # anything else: no stop string (length / eos), or an empty query
        self._intermediate("", [])
        if gen.finish_reason == "length" and self.budget_left <= 0:
            self._finish("length")
            return Action("stop")
        if self.config.invalid_action == "end" or len(t.turn_spans) > self.config.max_turns:
            self._finish("invalid")
            return Action("stop")
        msg = INVALID_ACTION_MESSAGE + ("<think>" if self.config.prethink else "")
        if not self._append_masked(msg):
            self._finish("length")
            return Action("stop")
        return Action("invalid")

    def observe(self, passages: Sequence[Any]) -> None:
        """Append the search result of the pending query as a masked observation."""
        if self.pending_query is None:
            raise RuntimeError("observe() called without a pending search")
        self._intermediate(self.pending_query, [str(p.id) for p in passages])
        self.pending_query = None
        if not self._append_masked(format_observation(passages, self.config.prethink)):
            self._finish("length")

    # -- resuming from an intermediate state ---------------------------------------------
    def branch_points(self) -> list[int]:
        """Turn counts ``n`` this rollout can be resumed from: 0 (the prompt) and every ``n``
        whose turn ``n`` started after an observation, i.e. every non-final turn boundary."""
        return list(range(len(self.traj.turn_spans)))

    def fork(self, n_turns: int) -> AgentState:
        """A new state holding the first ``n_turns`` turns of this one and the observations
        after them, ready to generate turn ``n_turns``.

        Prefix tokens, loss masks, log-probs, spans, queries, doc ids and thinks are copies of
        this rollout's; what came after is dropped. Only boundaries from :meth:`branch_points`
        are allowed (a turn boundary that a generation followed)."""
        if self.pending_query is not None:
            raise RuntimeError("fork() called while a search is pending; observe() it first")
        if n_turns not in self.branch_points():
            raise ValueError(
                f"cannot resume after {n_turns} turns: this rollout has {len(self.traj.turn_spans)} "
                f"turns; allowed: {self.branch_points()}"
            )
        t = self.traj
        cut = t.turn_spans[n_turns][0]
        child = AgentState(t.prompt_ids, self.tokenizer, self.config, self.stop)
        c = child.traj
        c.response_ids = list(t.response_ids[:cut])
        c.loss_mask = list(t.loss_mask[:cut])
        c.logprobs = list(t.logprobs[:cut])
        c.turn_spans = [list(s) for s in t.turn_spans[:n_turns]]
        c.queries = list(t.queries[:n_turns])
        c.doc_ids = [list(d) for d in t.doc_ids[:n_turns]]
        c.thinks = list(t.thinks[:n_turns])
        child.searches = sum(1 for q in c.queries if q)
        child._text_parts = list(self._text_parts[: self._turn_parts[n_turns]])
        child._turn_parts = list(self._turn_parts[:n_turns])
        return child

    def trajectory(self) -> Trajectory:
        """The rollout so far (complete once ``done``)."""
        self.traj.response_text = "".join(self._text_parts)
        return self.traj


def run_batch(
    states: Sequence[AgentState],
    generate_fn: GenerateFn,
    search_fn: SearchFn,
    progress: Any = None,
) -> list[Trajectory]:
    """Drive many rollouts together: one batched generate and one batched search per turn."""
    while True:
        active = [s for s in states if not s.done]
        requests = [(s, s.next_request()) for s in active]
        requests = [(s, r) for s, r in requests if r is not None]
        if not requests:
            break
        gens = generate_fn([r for _, r in requests])
        if len(gens) != len(requests):
            raise RuntimeError(f"generate_fn returned {len(gens)} results for {len(requests)}")
        searching: list[AgentState] = []
        for (state, _), gen in zip(requests, gens, strict=True):
            if state.consume(gen).kind == "search":
                searching.append(state)
        if searching:
            results = search_fn([s.pending_query or "" for s in searching])
            for state, passages in zip(searching, results, strict=True):
                state.observe(passages)
        if progress is not None:
            progress.update(sum(1 for s in states if s.done) - progress.n)
    return [s.trajectory() for s in states]
