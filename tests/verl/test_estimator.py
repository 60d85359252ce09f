"""The calibadv estimator, called the way verl calls it, equals calibrate() on the same batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calibadv.methods.advantage import CalibConfig, calibrate
from calibadv.train.verl.estimator import (
    compute_calibadv_advantage,
    current_context,
    rollout_context,
)
from calibadv.train.verl.overrides import build_overrides

URL = "http://127.0.0.1:8123"
L = 24


def _rollout(spans, docs, thinks, answered=True):
    return {"turn_spans": spans, "doc_ids": docs, "thinks": thinks, "answered": answered}


def batch():
    """Two questions × 5 rollouts: searches with gold/other docs, answers, failures."""
    g = "g"
    rows = [  # (reward, format_ok, extras)
        (1.0, True, _rollout([[0, 4], [8, 12], [16, 20]], [["d1", "d2", "x"], ["d3", "d1", "y"]],
                             ["find a", "find b", "done"])),
        (0.0, True, _rollout([[0, 4], [8, 12]], [["d1", "d2", "z"]], ["find a", "guess"])),
        (0.2, True, _rollout([[0, 4], [8, 12], [16, 20]], [["q", "r", "s"], ["d3", "t", "u"]],
                             ["look", "look again", "maybe"])),
        (0.0, False, _rollout([[0, 6]], [[]], ["broken"], answered=False)),
        (1.0, True, _rollout([[0, 4], [8, 12]], [["d3", "d2", "d1"]], ["direct", "ok"])),
        (0.0, True, _rollout([[0, 4], [8, 12]], [["a", "b", "c"]], ["x", "y"])),
        (0.0, True, _rollout([[0, 4], [8, 12]], [["a", "e", "f"]], ["x", "z"])),
        (0.5, True, _rollout([[0, 4], [8, 12]], [["b", "e", "h"]], ["w", "v"])),
        (0.0, False, _rollout([[0, 3]], [], ["nothing"], answered=False)),
        (0.0, True, _rollout([[0, 4], [8, 12]], [["a", "c", "k"]], ["u", "t"])),
    ]
    n = len(rows)
    mask = torch.zeros(n, L, dtype=torch.long)
    rewards = torch.zeros(n, L)
    extras = []
    for i, (r, ok, extra) in enumerate(rows):
        end = extra["turn_spans"][-1][1]
        mask[i, :end] = 1
        for a, b in zip(extra["turn_spans"][:-1], extra["turn_spans"][1:]):
            mask[i, a[1]:b[0]] = 0  # observations between turns
        rewards[i, end - 1] = r  # verl puts the score on the last response token
        extras.append({**extra, "reward_extra_info": {"score": r, "format_ok": ok}})
    uid = np.array([g + "0"] * 5 + [g + "1"] * 5, dtype=object)
    return rewards, mask, uid, extras


@pytest.fixture(scope="module")
def algorithm_config(compose_config, make_spec):
    return compose_config(build_overrides(make_spec("calibadv"), Path("/runs/x"), URL)).algorithm


def _expected(rewards, mask, uid, extras, config: CalibConfig):
    adv, stats = calibrate(
        rewards.sum(-1), torch.tensor([e["reward_extra_info"]["format_ok"] for e in extras]),
        mask, list(uid), [e["turn_spans"] for e in extras], [e["doc_ids"] for e in extras],
        [e["thinks"] for e in extras], config,
    )
    return adv, stats


def test_verl_compute_advantage_equals_calibrate(algorithm_config):
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    rewards, mask, uid, extras = batch()
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": uid})
    with rollout_context(extras) as ctx:
        out = compute_advantage(data, adv_estimator="calibadv", config=algorithm_config)
    expected, stats = _expected(rewards, mask, uid, extras,
                                CalibConfig.from_dict(dict(algorithm_config.calibadv.calibration)))
    torch.testing.assert_close(out.batch["advantages"], expected.float())
    torch.testing.assert_close(out.batch["returns"], expected.float())
    assert ctx.calls == 1 and ctx.stats["c_hist"] == stats["c_hist"]
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    grpo, _ = compute_grpo_outcome_advantage(rewards, mask, index=uid)
    assert not torch.allclose(out.batch["advantages"], grpo)  # the batch exercises calibration


def test_v1_trainer_path_equals_calibrate(algorithm_config):
    """verl's v1 trainer calls compute_advantage_for_multi_trajectories with TQ keys."""
    from verl import DataProto
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    rewards, mask, uid, extras = batch()
    keys = [f"{u}_{i % 5}_0" for i, u in enumerate(uid)]
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": uid})
    with rollout_context(extras):
        out = compute_advantage_for_multi_trajectories(
            data, batch_keys=keys, adv_estimator="calibadv", num_repeat=5, config=algorithm_config)
    expected, _ = _expected(rewards, mask, uid, extras,
                            CalibConfig.from_dict(dict(algorithm_config.calibadv.calibration)))
    torch.testing.assert_close(out.batch["advantages"], expected.float())


def test_search_r1_preset_reproduces_verl_grpo(compose_config, make_spec):
    """With every calibration off, our estimator is verl's own GRPO advantage."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    algo = compose_config(build_overrides(make_spec("search-r1"), Path("/runs/x"), URL)).algorithm
    rewards, mask, uid, extras = batch()
    with rollout_context(extras):
        ours, _ = compute_calibadv_advantage(rewards, mask, index=uid, config=algo)
    grpo, _ = compute_grpo_outcome_advantage(rewards, mask, index=uid, epsilon=1e-6)
    torch.testing.assert_close(ours, grpo, atol=1e-5, rtol=1e-5)


def test_estimator_outside_the_trainer_mode_says_how_to_fix(algorithm_config):
    rewards, mask, uid, _ = batch()
    with pytest.raises(RuntimeError, match="trainer.v1.trainer_mode=calibadv"):
        compute_calibadv_advantage(rewards, mask, index=uid, config=algorithm_config)


def test_extras_of_another_agent_loop_are_rejected(algorithm_config):
    rewards, mask, uid, _ = batch()
    with rollout_context([{"turn_scores": []}] * len(uid)):
        with pytest.raises(ValueError, match="calibadv_search"):
            compute_calibadv_advantage(rewards, mask, index=uid, config=algorithm_config)


def test_batch_size_mismatch_is_an_error(algorithm_config):
    rewards, mask, uid, extras = batch()
    with rollout_context(extras[:-1]):
        with pytest.raises(ValueError, match="9 rollout extras for a batch of 10"):
            compute_calibadv_advantage(rewards, mask, index=uid, config=algorithm_config)


def test_context_is_restored_after_the_block():
    with rollout_context([{}]):
        with rollout_context([{}, {}]) as inner:
            assert current_context() is inner
        assert len(current_context().extras) == 1
    with pytest.raises(RuntimeError):
        current_context()


def test_registered_in_verls_registry():
    import calibadv.train.verl.plugin  # noqa: F401  (entry point; also loaded by `import verl`)
    from verl.trainer.ppo import core_algos

    assert core_algos.get_adv_estimator_fn("calibadv") is compute_calibadv_advantage


def test_padding_rows_change_nothing_and_get_zero_advantage(algorithm_config):
    """verl pads a batch to a multiple of the data-parallel size with copies marked padding."""
    from calibadv.train.verl.trainer import PADDING_EXTRAS

    rewards, mask, uid, extras = batch()
    pad = 2
    rewards_p = torch.cat([rewards, torch.zeros(pad, L)])
    mask_p = torch.cat([mask, torch.zeros(pad, L, dtype=torch.long)])
    mask_p[-pad:, 0] = 0  # verl's padding rows: one response token, masked out
    uid_p = np.concatenate([uid, np.array(["pad"] * pad, dtype=object)])
    with rollout_context(extras + [dict(PADDING_EXTRAS)] * pad) as ctx:
        adv, _ = compute_calibadv_advantage(rewards_p, mask_p, index=uid_p, config=algorithm_config)
    cfg = CalibConfig.from_dict(dict(algorithm_config.calibadv.calibration))
    expected, stats = _expected(rewards, mask, uid, extras, cfg)
    torch.testing.assert_close(adv[:-pad], expected.float())
    assert adv[-pad:].abs().sum() == 0
    assert ctx.stats["empty_silver_frac"] == stats["empty_silver_frac"]  # no extra group
    assert len(ctx.stats["per_step_c"]) == len(extras)
