"""A short real local run of each credit-assignment baseline (GiGPO, MT-GRPO, Tree-GRPO) on the
tiny world: the preset's registered estimator (and rollout shape) act, their signals land in
metrics.jsonl and the dumped advantages are the estimator's on the dumped rewards."""

from __future__ import annotations

import pytest
import torch

from calibadv.methods.advantage import grpo_advantage
from calibadv.methods.estimators import is_void_step, tree_grpo_advantage
from calibadv.io import read_jsonl

from .conftest import cli
from .test_end_to_end import write_spec

pytestmark = pytest.mark.slow

#: preset → a metric its estimator writes
SIGNALS = {"gigpo": "gigpo_step_groups", "mt-grpo": "mt_tool_frac", "tree-grpo": None}


def _run(world, server, tmp_path, method):
    spec = write_spec(tmp_path / "spec.yaml", world, server, method, steps=2, val_before_train=False)
    out = tmp_path / "run"
    cli("train", "--spec", spec, "--out", out)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    return metrics, read_jsonl(out / "rollouts" / "step_000001.jsonl")


@pytest.mark.parametrize("method", ["gigpo", "mt-grpo"])
def test_step_level_baselines_train_locally(world, server, tmp_path, method):
    metrics, dump = _run(world, server, tmp_path, method)
    assert all(SIGNALS[method] in m for m in metrics)
    assert len(dump) == 6  # batch 2 × group 3: independent chains
    if method == "gigpo":
        # the dumped rollout advantage is A^E of its last step row: the GRPO z-score of the
        # episode score over every step row of the group (verl-agent's cross-step statistics;
        # a void step's row carries R - 0.01)
        rows, groups, last = [], [], []
        for d in dump:
            n = len(d["turn_spans"])
            rows += [d["reward"] - 0.01 * float(is_void_step(d, t)) for t in range(n)]
            groups += [d["group"]] * n
            last.append(len(rows) - 1)
        per_row = grpo_advantage(torch.tensor(rows), torch.ones(len(rows), 1), groups)[:, 0]
        want = [per_row[k].item() for k in last]
        assert [d["advantage"] for d in dump] == pytest.approx(want, abs=1e-5)


def test_tree_grpo_trains_locally_on_trees(world, server, tmp_path):
    metrics, dump = _run(world, server, tmp_path, "tree-grpo")
    assert len(dump) == 12  # batch 2 × (M = 2 trees × K = 3 leaves)
    assert [d["tree"] for d in dump] == [0, 0, 0, 1, 1, 1] * 2
    groups = [d["group"] for d in dump]
    assert groups[:6] == [groups[0]] * 6 and groups[6:] == [groups[6]] * 6
    rewards = torch.tensor([d["reward"] for d in dump])
    want, _ = tree_grpo_advantage(rewards, torch.ones(12, 1), groups, [d["tree"] for d in dump])
    assert [d["advantage"] for d in dump] == pytest.approx(want[:, 0].tolist(), abs=1e-6)


def test_stepsearch_trains_locally_with_a_value_head_and_resumes_exactly(world, server, tmp_path):
    """PPO with the value head: its loss and the token-reward signals are logged, the dumped
    rewards are StepSearch's, and a run stopped after step 1 and resumed (value head and its
    optimiser from the checkpoint) logs exactly what an uninterrupted run logs."""
    import yaml

    def spec(name, steps):
        path = write_spec(tmp_path / f"{name}.yaml", world, server, "stepsearch", steps=steps,
                          val_before_train=False, save_every=1, val_every=100)
        data = yaml.safe_load(path.read_text())
        data["method"]["estimator"]["knobs"]["critic_lr"] = 1e-2  # so the head visibly learns
        path.write_text(yaml.safe_dump(data))
        return path

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli("train", "--spec", spec("s2", 2), "--out", straight)
    cli("train", "--spec", spec("r1", 1), "--out", resumed)
    cli("train", "--spec", spec("r2", 2), "--out", resumed)
    metrics = read_jsonl(straight / "metrics.jsonl")
    for m in metrics:
        assert {"critic/vf_loss", "critic/vf_clipfrac", "value_mean", "return_mean",
                "token_reward_final_mean", "token_reward_step_mean", "reward_kl_penalty"} <= set(m)
    assert metrics[1]["value_mean"] != 0.0  # the zero-initialised head learned at step 1

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]

    assert strip(read_jsonl(resumed / "metrics.jsonl")) == strip(metrics)
    state = torch.load(straight / "checkpoints" / "step_000002" / "trainer_state.pt",
                       weights_only=False)
    assert set(state["critic"]) == {"head", "optimizer"}
