"""Our Search-R1 rollout inside verl: the agent loop ``calibadv_search``.

verl's built-in ``ToolAgentLoop`` renders tool output through the chat template; the Search-R1
protocol instead appends ``<information>`` text to the same assistant turn. The rollout itself
is :func:`calibadv.train.verl.search_rollout.run_search_rollout` (no verl import) driven by
``self.server_manager.generate``; this module adds verl's registration, the prompt, the
retrieval client and the ``AgentLoopOutput`` with what CalibAdv needs in ``extra_fields``
(turn spans, retrieved doc ids, think texts, format flag) beside verl's own fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from calibadv.train.verl import AGENT_LOOP_NAME
from calibadv.train.verl.search_rollout import (  # noqa: F401  (merge_…: re-exported)
    SearchFn,
    merge_generation_fields,
    run_search_rollout,
)
from calibadv.train.verl.settings import loop_settings, plain

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
        done = await run_search_rollout(self.server_manager.generate, self.tokenizer,
                                        self.settings, ids, sampling_params, search)
        traj, n = done.traj, self.response_length
        return AgentLoopOutput(
            prompt_ids=traj.prompt_ids,
            response_ids=traj.response_ids[:n],
            response_mask=traj.loss_mask[:n],
            response_logprobs=traj.logprobs[:n] if done.have_logprobs else None,
            num_turns=1 + 2 * len(traj.turn_spans),
            metrics=done.timing,
            extra_fields=done.extra_fields(self.settings, kwargs),
        )


def register_agent_loop() -> None:
    """Importing this module registers the loop; kept as a function for the plugin."""
