"""Stand-ins for verl's GPU side, each with the interface of the verl 0.9.1 part it replaces.

Only the vLLM engine is replaced. :class:`ScriptedVLLMServer` answers
``generate(prompt_ids, sampling_params, request_id, ...)`` with the ``TokenOutput`` that
``vLLMHttpServer.generate`` (``workers/rollout/vllm_rollout/vllm_async_server.py``) builds:
token ids cut at the first stop string (kept, ``include_stop_str_in_output``) and at
``max_tokens``, log-probs when asked, ``stop_reason="completed"``, and ``extra_fields``
holding the weight version (``global_steps``, set by ``set_global_steps`` like verl's
weight sync) and ``num_cached_tokens``. The agent loop never talks to it directly: it goes
through verl's real ``LLMServerClient`` and real ``GlobalRequestLoadBalancer``
(:func:`real_llm_client`), which add ``min_global_steps``/``max_global_steps`` exactly as in
a GPU run. :class:`InProcessActor` gives an ordinary object Ray's ``.remote`` call style so
that the balancer can run in the calling process instead of a Ray actor of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections import Counter
from typing import Any

#: The scripted world: question → (good query, bad query, answer, wrong answer).
WORLD = {
    "who wrote the Blue Book?": ("author of the Blue Book", "weather in Lima", "Ann Lee", "Bo Chen"),
    "where was Ann Lee born?": ("birthplace of Ann Lee", "football club", "Oslo", "Cairo"),
    "which river crosses Tarn?": ("river of Tarn", "museum of art", "Vell", "Nile"),
    "who founded Kest College?": ("founder of Kest College", "airport passengers", "Mira Holt",
                                  "Ann Lee"),
}
CORPUS = [
    ("d1", "Blue Book", "The Blue Book was written by Ann Lee in 1990."),
    ("d2", "Ann Lee", "Ann Lee is a writer who was born in Oslo."),
    ("d3", "Tarn", "The river Vell crosses the town of Tarn."),
    ("d4", "Kest College", "Kest College was founded by Mira Holt."),
    ("d5", "Lima", "Lima has mild weather and little rain."),
    ("d6", "Cairo", "Cairo is a large city on the Nile."),
]
#: Rollout variants of one group, in the order a group's first turns arrive.
VARIANTS = ("good_search", "bad_search", "no_search")


def scripted_turn(prompt_text: str, variant_of: dict[str, int]) -> str:
    """The next assistant turn for a prompt of the scripted world (after ``<think>``)."""
    question = next((q for q in WORLD if q in prompt_text), None)
    if question is None:
        return " I cannot parse this </think><answer> nothing </answer>"
    good, bad, answer, wrong = WORLD[question]
    tail = prompt_text.rsplit("<|im_start|>assistant", 1)[-1]
    if "<information>" in tail:  # answer turn: answer what the passages say
        seen = tail.rsplit("<information>", 1)[1]
        return f" the passages say it </think><answer> {answer if answer in seen else wrong} </answer>"
    variant = VARIANTS[variant_of[question] % len(VARIANTS)]
    variant_of[question] += 1
    if variant == "good_search":
        return f" I need to look it up </think><search> {good} </search>"
    if variant == "bad_search":
        return f" let me search </think><search> {bad} </search>"
    return f" I know it </think><answer> {wrong} </answer>"


class ScriptedVLLMServer:
    """``vLLMHttpServer``'s ``generate`` / ``set_global_steps`` over :func:`scripted_turn`
    (or over fixed ``turns``, replayed in order, for single-rollout tests)."""

    def __init__(self, tokenizer: Any, logprob: float = -0.5, turns: list[str] | None = None,
                 global_steps: int | None = None) -> None:
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        self.logprob = logprob
        self.turns = list(turns) if turns is not None else None
        # verl's server has no weight version until the trainer's first weight sync
        self.global_steps = global_steps
        self.variant_of: Counter[str] = Counter()
        self.requests = 0

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def num_requests(self) -> int:
        return self.requests

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any],
                       request_id: str, image_data: list[Any] | None = None,
                       video_data: list[Any] | None = None, audio_data: list[Any] | None = None,
                       mm_processor_kwargs: dict[str, Any] | None = None, priority: int = 0,
                       kv_transfer_params: dict | None = None):
        from verl.workers.rollout.replica import TokenOutput

        self.requests += 1
        if self.turns is not None:
            text = self.turns.pop(0)
        else:
            text = scripted_turn(self.tokenizer.decode(list(prompt_ids)), self.variant_of)
        for stop in sampling_params.get("stop") or []:
            cut = text.find(stop)
            if cut >= 0:
                text = text[: cut + len(stop)]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        ids = ids[: int(sampling_params.get("max_tokens", len(ids)))]
        return TokenOutput(
            token_ids=ids,
            log_probs=[self.logprob] * len(ids) if sampling_params.get("logprobs") else None,
            routed_experts=None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps, "num_cached_tokens": 0},
        )


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future:
        """Run now and hand back an awaitable, as Ray's ``.remote`` hands back an ObjectRef
        (a call whose result is never awaited, like ``release_server``, still runs)."""
        result = self.fn(*args, **kwargs)
        if inspect.isawaitable(result):
            return asyncio.ensure_future(result)
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future


class InProcessActor:
    """``handle.method.remote(...)`` on a plain object in this process."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):  # pickling looks up __setstate__ & co. before _target is set
            raise AttributeError(name)
        return _Method(getattr(self._target, name))


def real_llm_client(config: Any, server: Any) -> Any:
    """verl's own ``LLMServerClient`` and load balancer in front of ``server`` (a Ray actor
    handle, or a plain object wrapped in :class:`InProcessActor`)."""
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.router import GlobalRequestLoadBalancer

    balancer = InProcessActor(GlobalRequestLoadBalancer({"replica-0": server}))
    return LLMServerClient(config=config, load_balancer_handle=balancer)


def search_query(response_text: str) -> list[str]:
    return re.findall(r"<search>(.*?)</search>", response_text)
