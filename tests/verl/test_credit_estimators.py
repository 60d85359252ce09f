"""The credit-assignment baselines on the verl backend: the estimator named by the preset
reaches verl's ``calibadv`` estimator through the composed config and gives what the local
backend's call gives; tree rollouts are refused at config validation (a dry run), not on the
cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibadv.methods.advantage import CalibConfig
from calibadv.errors import ConfigError
from calibadv.methods.estimators import EstimatorBatch, estimate
from calibadv.train.verl.overrides import build_overrides

RUN = "/runs/x"
URL = "http://127.0.0.1:8123"


def _extras():
    """Two questions × 2 rollouts: search then answer, or a direct answer."""
    info = "<information>Doc 1(Title: Paris) Paris is in France</information>"
    searched = {"turn_spans": [[0, 3], [6, 9]], "doc_ids": [["d1"]], "thinks": ["a", "b"],
                "queries": ["paris"], "stop_reason": "answer", "answer": "Paris",
                "response_text": f"<search>paris</search>{info}<answer>Paris</answer>",
                "golden_answers": ["Paris"]}
    direct = {"turn_spans": [[0, 9]], "doc_ids": [], "thinks": ["a"], "queries": [],
              "stop_reason": "answer", "answer": "Rome", "response_text": "<answer>Rome</answer>",
              "golden_answers": ["Paris"]}
    rows = [searched, direct, direct, searched]
    scores = [1.0, 0.0, 0.0, 0.5]
    return [{**r, "reward_extra_info": {"format_ok": True, "score": s}} for r, s in zip(rows, scores)], scores


@pytest.mark.parametrize("method", ["gigpo", "mt-grpo"])
def test_the_verl_estimator_dispatches_to_the_presets_estimator(method, compose_config, make_spec):
    from calibadv.train.verl.estimator import compute_calibadv_advantage, rollout_context

    spec = make_spec(method)
    algorithm = compose_config(build_overrides(spec, RUN, URL)).algorithm
    assert algorithm.calibadv.estimator.name == spec.method["estimator"]["name"]
    extras, scores = _extras()
    width = 10
    rewards = torch.zeros(4, width)
    rewards[:, -1] = torch.tensor(scores)
    mask = torch.ones(4, width, dtype=torch.long)
    mask[[0, 3], 3:6] = 0
    uid = np.array(["a", "a", "b", "b"], dtype=object)
    with rollout_context(extras, step=1) as ctx:
        adv, _ = compute_calibadv_advantage(rewards, mask, uid, algorithm)
    local, _ = estimate(spec.method["estimator"]["name"], spec.method["estimator"]["knobs"],
                        EstimatorBatch(torch.tensor(scores), mask, list(uid),
                                       [{**e, "format_ok": True} for e in extras],
                                       CalibConfig.from_dict(spec.method["calibration"])))
    assert torch.equal(adv, local.float() * mask) and adv.abs().sum() > 0
    assert ctx.stats and ctx.calls == 1


def test_presets_without_an_estimator_add_no_override(make_spec):
    overrides = build_overrides(make_spec("search-r1"), RUN, URL)
    assert not any("calibadv.estimator" in o for o in overrides)


def test_tree_rollouts_fail_at_config_validation_with_the_reason(make_spec):
    with pytest.raises(ConfigError, match="tree rollouts need a custom rollout"):
        build_overrides(make_spec("tree-grpo"), RUN, URL)


def test_the_paper_workflow_refuses_tree_grpo_on_verl_while_building_the_dag():
    """Listing tree-grpo for a verl model fails when its run spec is built (Snakemake's dry
    run), with the reason; with backend: local the same run resolves."""
    from pathlib import Path

    from calibadv.workflow.run_specs import run_spec_dict
    from calibadv.workflow.runs import model_methods
    from calibadv.workflow.validation import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "config" / "config.yaml")
    config["models"]["qwen2.5-7b"]["methods"].append("tree-grpo")
    with pytest.raises(ConfigError, match=r"run qwen2\.5-7b/tree-grpo: .*tree rollouts need a custom rollout"):
        run_spec_dict(config, "qwen2.5-7b", "tree-grpo")
    assert run_spec_dict({**config, "backend": "local"}, "qwen2.5-7b", "tree-grpo")["method"][
        "rollout"]["name"] == "tree"
    for method in ("gigpo", "mt-grpo"):  # listed for Qwen2.5-7B and runnable on verl
        assert method in model_methods(config, "qwen2.5-7b")
        assert run_spec_dict(config, "qwen2.5-7b", method)["method"]["estimator"]["name"]


def test_stepsearch_token_rewards_replace_verls_rm_scores_with_the_local_ones():
    """The trainer mode's rewrite of ``rm_scores`` (verl's score on the last token) gives the
    same token rewards as the local backend's ``gae`` estimator reads; padding rows keep
    verl's values."""
    from calibadv.methods.token_rewards import token_scores
    from calibadv.train.verl.estimator import PADDING, token_reward_scores

    extras = [dict(e, gold_docs=["Paris is in France"], sub_query_keys=[["paris"]])
              for e in _extras()[0][:2]] + [{PADDING: True}]
    rm = torch.zeros(3, 10)
    rm[0, 9], rm[1, 9], rm[2, 4] = 1.0, 0.0, 0.5
    out, stats = token_reward_scores(rm, extras, {"name": "stepsearch", "knobs": {}})
    want, _ = token_scores("stepsearch", {}, [1.0, 0.0], extras[:2], 10)
    assert torch.equal(out[:2], want) and torch.equal(out[2], rm[2])
    assert out[0].nonzero().flatten().tolist() == [2, 8]  # </search> of turn 0, last token
    assert "calibadv/token_reward_step_mean" in stats


def test_a_token_reward_without_a_token_level_estimator_is_refused():
    from calibadv.train.verl.method_parts import check_method

    with pytest.raises(ConfigError, match="reward.name = 'stepsearch'.*gae"):
        check_method({"reward": {"name": "stepsearch"}})
