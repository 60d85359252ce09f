"""One Search-R1 rollout through any engine with verl's server-manager interface (no verl import).

:func:`run_search_rollout` drives the engine-agnostic :class:`calibadv.agent.AgentState` (the
local backend drives the same state machine) with ``generate(request_id=, prompt_ids=,
sampling_params=)`` returning an object shaped like verl's ``TokenOutput`` (``token_ids``,
``log_probs``, ``extra_fields``): token ids in, token ids out, never re-tokenised; stop strings
``</search>``/``</answer>`` with ``include_stop_str_in_output``; one request id per rollout
(sticky server, prefix-cache reuse); observations appended as mask-0 tokens. verl's agent loop
(:mod:`calibadv.train.verl.agent_loop`) wraps it; ``benchmarks/gpu_check_verl.py`` drives it on
a GPU without verl.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from calibadv.agent.protocol import AgentState
from calibadv.agent.types import Generation, GenerationRequest, Trajectory
from calibadv.train.verl.settings import LoopSettings, plain

SearchFn = Callable[[Sequence[str], int], Awaitable[list[list[Any]]]]
GenerateFn = Callable[..., Awaitable[Any]]

#: Per-generation counters verl's tool loop adds up over turns (speculative decoding stats).
SUMMED_KEYS = ("spec_num_draft_tokens", "spec_num_accepted_tokens", "spec_num_verify_steps")


def to_generation(output: Any, request: GenerationRequest, tokenizer: Any) -> Generation:
    """verl ``TokenOutput`` → protocol ``Generation`` (ids kept, text decoded for parsing)."""
    ids = [int(t) for t in output.token_ids][: request.max_tokens]
    logprobs = [float(x) for x in (output.log_probs or [])][: len(ids)]
    if len(logprobs) != len(ids):
        logprobs = [0.0] * len(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.rstrip().endswith(tuple(request.stop)):
        reason = "stop"
    elif len(ids) >= request.max_tokens:
        reason = "length"
    else:
        reason = "eos"
    return Generation(token_ids=ids, logprobs=logprobs, text=text, finish_reason=reason)


def merge_generation_fields(merged: dict[str, Any] | None, fields: dict[str, Any]
                            ) -> dict[str, Any]:
    """Fold one generation's ``TokenOutput.extra_fields`` into the rollout's, as verl's loops do.

    verl's server client stamps every generation with the weight version it ran on
    (``global_steps``, ``min_global_steps``, ``max_global_steps``); the trainer's
    ``_compute_metrics`` reads them from every trajectory and fails on a missing one. Like
    ``ToolAgentLoop``: the first generation's fields are kept, later ones only raise
    ``max_global_steps`` and add up the speculative-decoding counters.
    """
    if merged is None:
        return dict(fields)
    if fields.get("max_global_steps") is not None:
        merged["max_global_steps"] = fields["max_global_steps"]
    for key in SUMMED_KEYS:
        if key in fields and key in merged:
            merged[key] = int(merged[key]) + int(fields[key])
    return merged


def rollout_extra_fields(traj: Trajectory, settings: LoopSettings, sample: dict[str, Any]
                         ) -> dict[str, Any]:
    """What the trainer mode, the estimator, the reward and the dumps read from one rollout."""
    from calibadv.evaluate.metrics import rollout_ppl
    from calibadv.answer_score import is_valid_format

    gen_lps = [lp for lp, m in zip(traj.logprobs, traj.loss_mask) if m]
    extra_info = dict(plain(sample.get("extra_info")) or {})
    truth = plain(sample.get("reward_model")) or {}
    golds = truth.get("ground_truth", {}) if isinstance(truth, dict) else {}
    golds = golds.get("target", golds) if isinstance(golds, dict) else golds
    return {
        "turn_spans": [list(s) for s in traj.turn_spans],
        "doc_ids": [list(d) for d in traj.doc_ids],
        "thinks": list(traj.thinks),
        "queries": list(traj.queries),
        "answer": traj.answer,
        "answered": traj.answered,
        "stop_reason": traj.stop_reason,
        "response_text": traj.response_text,
        "format_ok": is_valid_format(traj.response_text, prethink=settings.agent.prethink,
                                     require_search=settings.require_search),
        "num_searches": traj.num_searches,
        "response_len": len(traj.response_ids),
        "num_generated": len(gen_lps),
        "token_prob_sum": float(sum(math.exp(x) for x in gen_lps)),
        "ppl": rollout_ppl(traj),
        "question_index": extra_info.get("index"),
        "question_id": str(extra_info.get("id", extra_info.get("index", ""))),
        "question": str(extra_info.get("question", "")),
        "golden_answers": [str(g) for g in (golds if isinstance(golds, list) else [golds])],
        "supporting_ids": [str(s) for s in extra_info.get("supporting_ids") or []],
        # StepSearch's token reward (empty for plain QA sets)
        "gold_docs": [str(d) for d in extra_info.get("gold_docs") or []],
        "sub_query_keys": [[str(k) for k in g] for g in extra_info.get("sub_query_keys") or []],
        "data_source": str(sample.get("data_source", "")),
    }


@dataclass
class SearchRollout:
    """A finished rollout and what the engine reported about it."""

    traj: Trajectory
    generation_fields: dict[str, Any] = field(default_factory=dict)
    have_logprobs: bool = True
    timing: dict[str, float] = field(default_factory=dict)

    def extra_fields(self, settings: LoopSettings, sample: dict[str, Any]) -> dict[str, Any]:
        """``AgentLoopOutput.extra_fields``: verl's per-generation fields (weight versions),
        the schema keys verl's own loops add, then ours."""
        return {**self.generation_fields, "turn_scores": [], "tool_rewards": [],
                **rollout_extra_fields(self.traj, settings, sample)}


async def run_search_rollout(generate: GenerateFn, tokenizer: Any, settings: LoopSettings,
                             prompt_ids: list[int], sampling_params: dict[str, Any],
                             search: SearchFn) -> SearchRollout:
    """Generate turn by turn until the protocol ends the rollout, searching in between."""
    state = AgentState(prompt_ids, tokenizer, settings.agent)
    request_id = uuid.uuid4().hex  # one id per rollout: sticky server, prefix cache reuse
    timing = {"generate_sequences": 0.0, "tool_calls": 0.0}
    have_logprobs = True
    merged: dict[str, Any] | None = None
    while (req := state.next_request()) is not None:
        params = dict(sampling_params)
        params.update(stop=list(req.stop), include_stop_str_in_output=True,
                      max_tokens=req.max_tokens)
        t0 = time.perf_counter()
        gen = await generate(request_id=request_id, prompt_ids=list(req.prompt_ids),
                             sampling_params=params)
        timing["generate_sequences"] += time.perf_counter() - t0
        have_logprobs = have_logprobs and bool(gen.log_probs)
        merged = merge_generation_fields(merged, gen.extra_fields)
        action = state.consume(to_generation(gen, req, tokenizer))
        if action.kind == "search":
            t0 = time.perf_counter()
            passages = (await search([action.query], settings.topk))[0]
            timing["tool_calls"] += time.perf_counter() - t0
            state.observe(passages)
    return SearchRollout(traj=state.trajectory(), generation_fields=merged or {},
                         have_logprobs=have_logprobs, timing=timing)
