"""Our Search-R1 agent loop inside verl, driven by a scripted server manager.

The loop generates through verl's real ``LLMServerClient`` and load balancer; only the vLLM
engine behind them is scripted (tests/verl/fakes.py), so every ``TokenOutput`` carries the
``extra_fields`` a GPU run has. The loop itself, verl's registry, hydra instantiation and
``AgentLoopOutput`` are the real ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from calibadv.data.prompt import build_messages, prompt_ids
from calibadv.retrieval.client import Passage
from calibadv.train.verl import agent_loop as loop_mod
from calibadv.train.verl.overrides import build_overrides
from tests.verl.fakes import InProcessActor, ScriptedVLLMServer, real_llm_client

URL = "http://127.0.0.1:8123"
TURNS = [
    " who wrote it </think><search> author of the book </search>",
    " it is Ann </think><answer> Ann Lee </answer>",
]
PASSAGES = [Passage("d7", "Book", "The book was written by Ann Lee."),
            Passage("d9", "Ann Lee", "Ann Lee is a writer.")]


class ScriptedServerManager:
    """The loop's ``server_manager``: verl's real ``LLMServerClient`` (and load balancer) in
    front of a scripted vLLM server (tests/verl/fakes.py); records what the loop asked for."""

    def __init__(self, tokenizer, turns: list[str], config, logprob: float = -0.25,
                 global_steps: int = 7) -> None:
        self.server = ScriptedVLLMServer(tokenizer, logprob=logprob, turns=turns,
                                         global_steps=global_steps)
        self.client = real_llm_client(config, InProcessActor(self.server))
        self.calls: list[dict[str, Any]] = []
        self.outputs: list[Any] = []

    async def generate(self, request_id, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any):
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids),
                           "sampling_params": dict(sampling_params)})
        out = await self.client.generate(request_id, prompt_ids=prompt_ids,
                                         sampling_params=sampling_params, **kwargs)
        self.outputs.append(out)
        return out


class ScriptedSearch:
    def __init__(self) -> None:
        self.queries: list[tuple[list[str], int]] = []

    async def __call__(self, queries, topk):
        self.queries.append((list(queries), topk))
        return [PASSAGES[:topk] for _ in queries]


@pytest.fixture(scope="module")
def trainer_config(compose_config, make_spec):
    spec = make_spec("calibadv", retrieval={"url": URL, "topk": 2})
    return compose_config(build_overrides(spec, Path("/runs/x"), URL))


def sample(question: str = "who wrote the book?") -> dict[str, Any]:
    """One dataset row as verl's RLHFDataset hands it to an agent loop."""
    return {
        "raw_prompt": build_messages(question),
        "data_source": "hotpotqa",
        "reward_model": {"style": "rule", "ground_truth": {"target": ["Ann Lee"]}},
        "extra_info": {"index": 17, "id": "q17", "question": question, "split": "train",
                       "supporting_ids": ["d7"]},
    }


def make_loop(trainer_config, tokenizer, server, monkeypatch, search):
    """Instantiate the loop exactly as verl's AgentLoopWorker does (registry + hydra)."""
    import hydra
    from verl.experimental.agent_loop.agent_loop import (
        DictConfigWrap,
        ToolListWrap,
        _agent_loop_registry,
    )
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setattr(loop_mod, "retrieval_search", lambda url, retries=5: search)
    return hydra.utils.instantiate(
        config=_agent_loop_registry["calibadv_search"],
        trainer_config=DictConfigWrap(config=trainer_config),
        server_manager=server, tokenizer=tokenizer, processor=None, hf_model_type=None,
        dataset_cls=RLHFDataset, data_config=DictConfigWrap(trainer_config.data),
        tools=ToolListWrap([]),
    )


def run_loop(loop, **sampling):
    params = {"temperature": 1.0, "top_p": 0.95, "top_k": -1, "repetition_penalty": 1.0,
              "logprobs": True, **sampling}
    return asyncio.run(loop.run(params, **sample()))


def test_search_then_answer(trainer_config, tokenizer, monkeypatch):
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    server, search = ScriptedServerManager(tokenizer, TURNS, trainer_config), ScriptedSearch()
    out = run_loop(make_loop(trainer_config, tokenizer, server, monkeypatch, search))
    assert isinstance(out, AgentLoopOutput)

    turn1 = tokenizer.encode(TURNS[0], add_special_tokens=False)
    turn2 = tokenizer.encode(TURNS[1], add_special_tokens=False)
    obs = tokenizer.encode(
        "\n\n<information>Doc 1(Title: Book) The book was written by Ann Lee.\n"
        "Doc 2(Title: Ann Lee) Ann Lee is a writer.</information>\n\n<think>",
        add_special_tokens=False)
    # PreThink: the prompt ends with <think>; generated tokens kept as sampled
    think_id = tokenizer.encode("<think>", add_special_tokens=False)
    assert out.prompt_ids == prompt_ids(tokenizer, sample()["raw_prompt"], prethink=True)
    assert out.prompt_ids[-len(think_id):] == think_id
    assert out.response_ids == turn1 + obs + turn2
    assert out.response_mask == [1] * len(turn1) + [0] * len(obs) + [1] * len(turn2)
    assert out.response_logprobs == [-0.25] * len(turn1) + [0.0] * len(obs) + [-0.25] * len(turn2)

    ef = out.extra_fields
    a = len(turn1) + len(obs)
    assert ef["turn_spans"] == [[0, len(turn1)], [a, a + len(turn2)]]
    assert ef["doc_ids"] == [["d7", "d9"]]
    assert ef["thinks"] == ["who wrote it", "it is Ann"]
    assert ef["queries"] == ["author of the book"]
    assert ef["answer"] == "Ann Lee" and ef["answered"] is True
    assert ef["format_ok"] is True and ef["num_searches"] == 1
    assert ef["question_index"] == 17 and ef["golden_answers"] == ["Ann Lee"]
    assert ef["supporting_ids"] == ["d7"]
    assert search.queries == [(["author of the book"], 2)]


def test_generation_requests_carry_stops_budget_and_one_session(trainer_config, tokenizer,
                                                                 monkeypatch):
    server = ScriptedServerManager(tokenizer, TURNS, trainer_config)
    out = run_loop(make_loop(trainer_config, tokenizer, server, monkeypatch, ScriptedSearch()))
    first, second = server.calls
    for call in server.calls:
        sp = call["sampling_params"]
        assert sp["stop"] == ["</search>", "</answer>"]
        assert sp["include_stop_str_in_output"] is True
        assert sp["temperature"] == 1.0 and sp["top_p"] == 0.95
        assert sp["max_tokens"] <= 1024
    assert first["request_id"] == second["request_id"]  # sticky session → prefix cache
    # the second request continues the exact token sequence: no re-tokenisation
    second_turn_start = out.extra_fields["turn_spans"][1][0]
    assert second["prompt_ids"] == out.prompt_ids + out.response_ids[:second_turn_start]


def test_output_converts_like_verls_own(trainer_config, tokenizer, monkeypatch):
    """AgentLoopOutput.as_dict() is what the TQ worker stores: masks/logprobs as tensors."""
    out = run_loop(make_loop(trainer_config, tokenizer, ScriptedServerManager(tokenizer, TURNS, trainer_config),
                             monkeypatch, ScriptedSearch()))
    d = out.as_dict()
    assert d["responses"].tolist() == out.response_ids
    assert d["response_mask"].tolist() == out.response_mask
    assert d["rollout_log_probs"].shape == d["responses"].shape
    assert d["extra_fields"]["doc_ids"] == [["d7", "d9"]]


def test_unanswered_rollout_is_recorded_as_invalid(trainer_config, tokenizer, monkeypatch):
    server = ScriptedServerManager(tokenizer, [" no tags at all"], trainer_config)
    out = run_loop(make_loop(trainer_config, tokenizer, server, monkeypatch, ScriptedSearch()))
    ef = out.extra_fields
    assert ef["answered"] is False and ef["format_ok"] is False
    assert ef["stop_reason"] == "invalid"
    assert len(ef["turn_spans"]) == len(ef["doc_ids"]) == 1 and ef["doc_ids"] == [[]]
    assert all(m == 1 for m in out.response_mask)


def test_engine_without_logprobs_gives_none(trainer_config, tokenizer, monkeypatch):
    server = ScriptedServerManager(tokenizer, TURNS, trainer_config)
    out = run_loop(make_loop(trainer_config, tokenizer, server, monkeypatch, ScriptedSearch()),
                   logprobs=False)
    assert all(o.log_probs is None for o in server.outputs)
    assert out.response_logprobs is None


def test_weight_versions_of_the_generations_reach_the_output(trainer_config, tokenizer,
                                                             monkeypatch):
    """verl's trainer reads min/max_global_steps of every trajectory (``_compute_metrics``):
    first generation's version as min, last one's as max, as verl's own loops do."""
    server = ScriptedServerManager(tokenizer, TURNS, trainer_config, global_steps=3)

    async def bump_after_first_turn(search_fn, queries, topk):
        server.server.global_steps = 4  # a weight update between the two turns
        return await search_fn(queries, topk)

    search = ScriptedSearch()
    loop = make_loop(trainer_config, tokenizer, server, monkeypatch,
                     lambda q, k: bump_after_first_turn(search, q, k))
    out = run_loop(loop)
    assert [o.extra_fields["global_steps"] for o in server.outputs] == [3, 4]
    ef = out.extra_fields
    assert ef["min_global_steps"] == 3 and ef["max_global_steps"] == 4
    assert ef["num_cached_tokens"] == 0 and ef["turn_scores"] == [] and ef["tool_rewards"] == []


def test_merge_keeps_the_first_version_and_sums_spec_decode_counters():
    first = {"global_steps": 2, "min_global_steps": 2, "max_global_steps": 2,
             "spec_num_draft_tokens": 5}
    merged = loop_mod.merge_generation_fields(None, first)
    merged = loop_mod.merge_generation_fields(merged, {"global_steps": 3, "min_global_steps": 3,
                                                       "max_global_steps": 3,
                                                       "spec_num_draft_tokens": 4})
    assert merged == {"global_steps": 2, "min_global_steps": 2, "max_global_steps": 3,
                      "spec_num_draft_tokens": 9}
    assert first["max_global_steps"] == 2  # the generation's own dict is not modified


def test_missing_retrieval_url_is_a_clear_error(compose_config, make_spec, tokenizer):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    overrides = [o for o in build_overrides(make_spec(), Path("/runs/x"), URL)
                 if "retrieval_url" not in o]
    cfg = compose_config(overrides)
    with pytest.raises(ValueError, match="retrieval_url"):
        loop_mod.CalibAdvSearchAgentLoop(
            trainer_config=DictConfigWrap(cfg), server_manager=None, tokenizer=tokenizer,
            processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data))
