"""Our Search-R1 rollout inside verl: :class:`calibadv.agent.AgentState` driven by verl's server.

verl's built-in ``ToolAgentLoop`` renders tool output through the chat template; the Search-R1
protocol instead appends ``<information>`` text to the same assistant turn. This loop reuses
the engine-agnostic protocol (the local backend drives the same state machine), generates
through ``self.server_manager.generate`` (token ids in, token ids out, never re-tokenised),
queries the retrieval server between turns and records what CalibAdv needs in
``extra_fields``: turn spans, retrieved doc ids, think texts, format flag.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from calibadv.agent.protocol import AgentState
from calibadv.agent.types import Generation, GenerationRequest, Trajectory
from calibadv.train.verl import AGENT_LOOP_NAME
from calibadv.train.verl.settings import LoopSettings, loop_settings, plain

SearchFn = Callable[[Sequence[str], int], Awaitable[list[list[Any]]]]

#: Per-generation counters verl's tool loop adds up over turns (speculative decoding stats).
SUMMED_KEYS = ("spec_num_draft_tokens", "spec_num_accepted_tokens", "spec_num_verify_steps")

_CLIENTS: dict[tuple[str, int, int], Any] = {}


def retrieval_search(url: str, retries: int = 5) -> SearchFn:
    """Async search against the retrieval server; one pooled client per URL and event loop.

    A search that still fails after ``retries`` retries raises: verl marks the rollout's group
    failed and the trainer mode fails the step (:class:`~calibadv.train.verl.trainer.FailFastReplayBuffer`).
    """
    from calibadv.retrieval.client import AsyncRetrievalClient

    key = (url, retries, id(asyncio.get_running_loop()))
    if key not in _CLIENTS:
        _CLIENTS[key] = AsyncRetrievalClient(url, retries=retries)
    client = _CLIENTS[key]

    async def search(queries: Sequence[str], topk: int) -> list[list[Any]]:
        return await client.search(list(queries), topk)

    return search


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
    from calibadv.reward import is_valid_format

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
        "data_source": str(sample.get("data_source", "")),
    }


@register(AGENT_LOOP_NAME)
class CalibAdvSearchAgentLoop(AgentLoopBase):
    """Search-R1 multi-turn rollout; select with ``rollout.agent.default_agent_loop``."""

    def __init__(self, *args: Any, searcher: SearchFn | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = loop_settings(self.config)
        self.response_length = int(self.rollout_config.response_length)
        self._searcher = searcher

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        from calibadv.data.prompt import prompt_ids

        messages = list(plain(kwargs["raw_prompt"]))
        ids = await asyncio.get_running_loop().run_in_executor(
            None, lambda: prompt_ids(self.tokenizer, messages, self.settings.agent.prethink)
        )
        ids = self._cap_text_prompt_length(list(ids))
        search = self._searcher or retrieval_search(self.settings.retrieval_url,
                                                    self.settings.retrieval_retries)
        state = AgentState(ids, self.tokenizer, self.settings.agent)
        request_id = uuid.uuid4().hex  # one id per rollout: sticky server, prefix cache reuse
        timing = {"generate_sequences": 0.0, "tool_calls": 0.0}
        have_logprobs = True
        generation_fields: dict[str, Any] | None = None
        while (req := state.next_request()) is not None:
            params = dict(sampling_params)
            params.update(stop=list(req.stop), include_stop_str_in_output=True,
                          max_tokens=req.max_tokens)
            t0 = time.perf_counter()
            out = await self.server_manager.generate(
                request_id=request_id, prompt_ids=list(req.prompt_ids), sampling_params=params
            )
            timing["generate_sequences"] += time.perf_counter() - t0
            have_logprobs = have_logprobs and bool(out.log_probs)
            generation_fields = merge_generation_fields(generation_fields, out.extra_fields)
            action = state.consume(to_generation(out, req, self.tokenizer))
            if action.kind == "search":
                t0 = time.perf_counter()
                passages = (await search([action.query], self.settings.topk))[0]
                timing["tool_calls"] += time.perf_counter() - t0
                state.observe(passages)
        traj = state.trajectory()
        n = self.response_length
        return AgentLoopOutput(
            prompt_ids=traj.prompt_ids,
            response_ids=traj.response_ids[:n],
            response_mask=traj.loss_mask[:n],
            response_logprobs=traj.logprobs[:n] if have_logprobs else None,
            num_turns=1 + 2 * len(traj.turn_spans),
            metrics=timing,
            extra_fields={**(generation_fields or {}), "turn_scores": [], "tool_rewards": [],
                          **rollout_extra_fields(traj, self.settings, kwargs)},
        )


def register_agent_loop() -> None:
    """Importing this module registers the loop; kept as a function for the plugin."""
