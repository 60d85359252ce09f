"""The baselines' parts reach verl: registered loss names, knobs in the actor config, the filter
in the estimator — and verl's actor and the local backend call the same function with the same
knobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calibadv.errors import ConfigError
from calibadv.methods.filters import decide, filtered_advantage
from calibadv.methods.catalog import names
from calibadv.methods.registry import LOSSES, VERL_BUILTIN_LOSSES
from calibadv.train.verl.overrides import build_overrides

RUN = Path("/runs/x")
URL = "http://127.0.0.1:8123"
LOSS_PRESETS = ["sapo-search", "llds", "llds-calibadv"]


def _actor(compose_config, make_spec, method: str):
    """The actor config exactly as verl's workers build it from the composed hydra config."""
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose_config(build_overrides(make_spec(method), RUN, URL))
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def test_verl_builtin_list_matches_the_installed_verl():
    from verl.trainer.ppo import core_algos

    from calibadv.methods.losses import register_in_verl

    register_in_verl()
    assert set(core_algos.POLICY_LOSS_REGISTRY) - set(names(LOSSES)) == set(VERL_BUILTIN_LOSSES)


def test_a_fresh_verl_process_has_our_losses_through_the_plugin():
    probe = ("import verl\nfrom verl.trainer.ppo import core_algos\n"
             "print(sorted(k for k in core_algos.POLICY_LOSS_REGISTRY "
             "if core_algos.POLICY_LOSS_REGISTRY[k].__module__ == 'calibadv.methods.losses'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}, timeout=600)
    assert out.stdout.strip() == str(sorted(names(LOSSES)))


@pytest.mark.parametrize("method", LOSS_PRESETS)
def test_loss_knobs_reach_verls_actor_config_as_the_local_backend_builds_them(
        method, compose_config, make_spec):
    from calibadv.train.policy import actor_config

    spec = make_spec(method)
    actor = _actor(compose_config, make_spec, method)
    local = actor_config(0.2, spec.method["loss"])
    assert actor.policy_loss.loss_mode == local.policy_loss.loss_mode == spec.method["loss"]["loss_mode"]
    assert dict(actor.policy_loss.knobs) == dict(local.policy_loss.knobs) == spec.method["loss"]["knobs"]
    assert type(actor.policy_loss) is type(local.policy_loss)


def test_methods_without_knobs_keep_verls_own_loss_config(compose_config, make_spec):
    from verl.workers.config import PolicyLossConfig

    for method in ("search-r1", "simpletir"):
        assert type(_actor(compose_config, make_spec, method).policy_loss) is PolicyLossConfig


def test_llds_ma_is_refused_for_verl_before_the_cluster(make_spec):
    spec = make_spec("llds")
    spec.method["loss"]["knobs"]["mask_answer"] = True
    with pytest.raises(ConfigError, match="mask_answer"):
        build_overrides(spec, RUN, URL)


def _verl_actor_batch(old, new, adv, mask):
    """verl's ``ppo_loss`` inputs for a padded batch (prompt of 2 tokens per row)."""
    from tensordict import TensorDict

    b, n = old.shape
    prompts = torch.ones(b, 2, dtype=torch.long)
    attn = torch.cat([torch.ones(b, 2, dtype=torch.long), torch.ones(b, n, dtype=torch.long)], 1)
    data = TensorDict({
        "prompts": prompts, "responses": torch.ones(b, n, dtype=torch.long), "attention_mask": attn,
        "response_mask": mask.long(), "old_log_probs": old, "advantages": adv,
    }, batch_size=[b])
    from verl.utils import tensordict_utils as tu

    # as verl's engine assigns them (workers/engine/*/transformer_impl.py)
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=b)
    # model output: log-probs of every position but the first (left-shifted), flattened
    full = torch.zeros(b, 2 + n)
    full[:, 1:1 + n] = new
    return data, {"log_probs": full.reshape(-1), "entropy": None}


@pytest.mark.parametrize("method", LOSS_PRESETS)
def test_verls_actor_and_the_local_backend_call_the_same_function_with_the_same_knobs(
        method, compose_config, make_spec, monkeypatch):
    from verl.trainer.ppo import core_algos
    from verl.workers.utils.losses import ppo_loss

    from calibadv.train.policy import actor_config, policy_loss

    spec = make_spec(method)
    name = spec.method["loss"]["loss_mode"]
    fn = LOSSES.get(name).fn
    calls = []

    def spy(**kw):
        calls.append((kw["config"].policy_loss.loss_mode, dict(kw["config"].policy_loss.knobs)))
        return fn(**kw)

    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, name, spy)
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=g) * 2
    new = old + torch.randn(3, 5, generator=g) * 0.3
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.2, -0.7, 0.0])[:, None] * mask

    actor = _actor(compose_config, make_spec, method)
    data, output = _verl_actor_batch(old, new, adv, mask)
    verl_loss, _ = ppo_loss(actor, output, data)
    local_loss, _ = policy_loss(actor_config(actor.clip_ratio, spec.method["loss"]), old, new, adv,
                                mask.float(), batch_num_tokens=int(mask.sum()), global_batch_size=3)
    assert calls[0] == calls[1] == (name, spec.method["loss"]["knobs"])
    assert float(verl_loss) == pytest.approx(float(local_loss), abs=1e-6)


# --------------------------------------------------------------------------- the filter on verl
def _void_batch():
    """Two questions × 3 rollouts; rollouts 1 and 4 end on a void turn."""
    n, width = 6, 6
    rewards = torch.zeros(n, width)
    mask = torch.zeros(n, width, dtype=torch.long)
    extras = []
    scores = [1.0, 0.0, 0.2, 0.0, 0.0, 0.5]
    void = [False, True, False, False, True, False]
    for i in range(n):
        mask[i, :4] = 1
        rewards[i, 3] = scores[i]
        extras.append({"turn_spans": [[0, 4]], "doc_ids": [] if not void[i] else [[]],
                       "thinks": ["t"], "answered": not void[i],
                       "stop_reason": "invalid" if void[i] else "answer",
                       "queries": [""] if void[i] else [],
                       "reward_extra_info": {"score": scores[i], "format_ok": not void[i]}})
    uid = np.array(["a"] * 3 + ["b"] * 3, dtype=object)
    return rewards, mask, uid, extras, void


@pytest.mark.parametrize("method", ["simpletir", "simpletir-mask"])
def test_the_verl_estimator_applies_the_methods_filter(method, compose_config, make_spec):
    from calibadv.methods.advantage import calibrate
    from calibadv.train.verl.estimator import compute_calibadv_advantage, rollout_context

    algorithm = compose_config(build_overrides(make_spec(method), RUN, URL)).algorithm
    knobs = dict(algorithm.calibadv.filter.knobs)
    # CalibAdv's simpletir from step 50; SimpleTIR's official mask from step 0 (issue 27)
    start = {"simpletir": 50, "simpletir-mask": 0}[method]
    assert knobs["void_start_step"] == start
    rewards, mask, uid, extras, void = _void_batch()
    for step, acts in ((start - 1, False), (start, True)) if start else ((0, True), (1, True)):
        with rollout_context(extras, step=step) as ctx:
            adv, _ = compute_calibadv_advantage(rewards, mask, uid, algorithm)
        from calibadv.train.verl.estimator import calib_config_from_algorithm

        def estimate(rows):
            return calibrate(rewards.sum(-1)[rows], [extras[i]["reward_extra_info"]["format_ok"] for i in rows],
                             mask[rows], [uid[i] for i in rows], [extras[i]["turn_spans"] for i in rows],
                             [extras[i]["doc_ids"] for i in rows], [extras[i]["thinks"] for i in rows],
                             calib_config_from_algorithm(algorithm))

        decision = decide("void_turns", knobs, extras, step)
        expect, _ = filtered_advantage(decision, estimate, len(extras), mask.shape[1])
        assert torch.allclose(adv, expect * mask)
        assert bool((adv[[1, 4]] == 0).all()) is acts
        assert ctx.stats["void_frac"] == pytest.approx(2 / 6)
        key = "void_dropped" if knobs["void_mode"] == "drop" else "void_masked"
        assert ctx.stats[key] == (2.0 if acts else 0.0)
