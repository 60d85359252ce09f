"""The first mini-batch's old log-probs come from its own loss forward: same update as the
separate no-grad pass (verl's recomputation), one forward fewer per micro-batch of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from calibadv.retrieval.client import make_search_fn
from calibadv.spec import load_run_spec
from calibadv.train import local, policy

from .test_end_to_end import write_spec

pytestmark = pytest.mark.slow
REAL_LOGPROBS = policy.response_logprobs
REAL_LOSS = policy.policy_loss


def one_step(spec_path: Path, server: str, out: Path, reuse: bool, monkeypatch) -> tuple:
    calls, olds = [], []

    def counted(*args, **kw):
        calls.append(torch.is_grad_enabled())
        return REAL_LOGPROBS(*args, **kw)

    def recorded(cfg, old_logp, logp, *args, **kw):  # the old log-probs each loss is given
        olds.append(old_logp.detach().clone())
        return REAL_LOSS(cfg, old_logp, logp, *args, **kw)

    monkeypatch.setattr(policy, "response_logprobs", counted)
    monkeypatch.setattr(policy, "policy_loss", recorded)
    trainer = local.LocalTrainer(load_run_spec(spec_path), out, make_search_fn(server, 3))
    trainer.reuse_first_forward = reuse
    metrics = trainer.step(1)
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return metrics, params, calls, olds


def test_the_first_mini_batch_reads_its_old_log_probs_off_its_loss_forward(
        world, server, tmp_path, monkeypatch):
    # batch 2 × G 3, mini-batch 1 question (3 rollouts), micro 3: two mini-batches of one chunk
    spec = write_spec(tmp_path / "spec.yaml", world, server, "calibadv", steps=1,
                      val_before_train=False, dump_rollouts_at=[])
    reused, p_reused, calls_reused, old_reused = one_step(spec, server, tmp_path / "a", True, monkeypatch)
    full, p_full, calls_full, old_full = one_step(spec, server, tmp_path / "b", False, monkeypatch)
    # the separate pass covers both mini-batches, or only the second
    assert calls_full == [False, False, True, True]
    assert calls_reused == [False, True, True]
    # each loss gets the same old log-probs, so the same update and the same logged signals
    assert len(old_reused) == len(old_full) == 2
    for a, b in zip(old_reused, old_full, strict=True):
        assert a.shape == b.shape and a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-5)
    assert reused["reward_mean"] == full["reward_mean"]
    assert torch.allclose(p_reused, p_full, atol=1e-6)
    for key in ("loss", "entropy", "pg_clipfrac", "grad_norm"):
        assert reused[key] == pytest.approx(full[key], rel=1e-4, abs=1e-6), key


def test_a_model_with_dropout_keeps_the_separate_pass():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1)
    assert not local._has_dropout(Qwen2ForCausalLM(Qwen2Config(**small)))
    assert local._has_dropout(Qwen2ForCausalLM(Qwen2Config(**small, attention_dropout=0.1)))
