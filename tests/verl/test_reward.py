"""The reward verl computes for our rollouts: the configured function through verl's manager."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from calibadv.answer_score import compute_score as base_score
from calibadv.train.verl.overrides import build_overrides

URL = "http://127.0.0.1:8123"
GOOD = (" need the author </think><search> author of the book </search>\n\n<information>Doc 1"
        "(Title: Book) The book was written by Ann Lee.</information>\n\n<think> it is Ann "
        "</think><answer> Ann Lee </answer>")
NO_SEARCH = " I know it </think><answer> Ann Lee </answer>"


@pytest.fixture(scope="module")
def config(compose_config, make_spec):
    return compose_config(build_overrides(make_spec("calibadv"), Path("/runs/x"), URL))


def score_through_verl(config, tokenizer, response: str, tool_extra: dict):
    """What AgentLoopWorker._compute_score hands to the reward loop, scored by verl's manager."""
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager

    prompt = torch.tensor(tokenizer.encode("Question: who wrote the book?<think>"))
    resp = torch.tensor(tokenizer.encode(response, add_special_tokens=False))
    ids = torch.cat([prompt, resp])
    data = DataProto.from_dict(
        tensors={"prompts": prompt[None], "responses": resp[None], "input_ids": ids[None],
                 "attention_mask": torch.ones_like(ids)[None]},
        non_tensors={"data_source": np.array(["hotpotqa"], dtype=object),
                     "reward_model": np.array([{"ground_truth": {"target": ["Ann Lee"]}}],
                                              dtype=object),
                     "extra_info": np.array([{"index": 3}], dtype=object),
                     "tool_extra_fields": np.array([tool_extra], dtype=object)},
    )

    async def go():
        manager = load_reward_manager(config, tokenizer)
        return await manager.run_single(data)

    return asyncio.run(go())


def test_score_equals_calibadv_reward(config, tokenizer):
    out = score_through_verl(config, tokenizer, GOOD, {"ppl": 3.0, "num_searches": 1})
    expected = base_score("hotpotqa", GOOD, {"target": ["Ann Lee"]}, None,
                          prethink=True, require_search=True)
    assert out["reward_score"] == pytest.approx(expected["score"]) == pytest.approx(1.0)
    info = out["reward_extra_info"]
    assert info["f1"] == expected["f1"] and info["format_ok"] is True
    assert info["high_ppl"] == 0.0 and info["num_searches"] == 1.0


def test_method_switches_reach_the_reward(config, tokenizer):
    """require_search (on for CalibAdv) comes from reward_kwargs: no search → format fails."""
    out = score_through_verl(config, tokenizer, NO_SEARCH, {"ppl": 80.0, "num_searches": 0})
    assert out["reward_score"] == 0.0
    assert out["reward_extra_info"]["format_ok"] is False
    assert out["reward_extra_info"]["f1"] == 1.0
    assert out["reward_extra_info"]["high_ppl"] == 1.0
