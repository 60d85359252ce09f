"""The loss-level baselines' extra terms (calibadv.methods.losses), rule by rule.

SAPO: GRPO + w · masked mean over the loss tokens of rollouts with Â ≥ 0 of −log r · 1[r ≤ t].
LLDS (official): λ · max(0, Δ) on Â ≥ 0 tokens of turns whose summed Δ > 0, / all loss tokens.
LLD (CalibAdv's code): λ · max(0, Δ) on Â > 0 tokens, no gate, / those tokens.
Δ = log π_old − log π_θ = −log r.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.methods.losses import LLDS, LLDS_CALIBADV, SEARCH_SAPO, llds_term, sapo_term, turn_ids
from calibadv.train.policy import actor_config, policy_loss


# --------------------------------------------------------------------------- strategies
@st.composite
def batches(draw, max_rows: int = 4, max_len: int = 8):
    """(old_logp, logp, advantages, mask): constant advantage per rollout, ≥ 1 loss token each."""
    b = draw(st.integers(1, max_rows))
    n = draw(st.integers(1, max_len))
    floats = st.floats(-3.0, 0.0, allow_nan=False, width=32)
    old = torch.tensor([[draw(floats) for _ in range(n)] for _ in range(b)])
    new = torch.tensor([[draw(floats) for _ in range(n)] for _ in range(b)])
    adv_rows = [draw(st.sampled_from([-1.5, -0.5, 0.0, 0.5, 1.5])) for _ in range(b)]
    mask = torch.tensor([[draw(st.booleans()) for _ in range(n)] for _ in range(b)])
    mask[:, 0] = True  # the first response token is always generated
    adv = torch.tensor(adv_rows)[:, None].expand(b, n) * mask
    return old, new, adv.clone(), mask


def _grad(fn, logp: torch.Tensor) -> torch.Tensor:
    x = logp.clone().requires_grad_(True)
    value = fn(x)
    if not value.requires_grad:
        return torch.zeros_like(logp)
    (g,) = torch.autograd.grad(value, x, allow_unused=True)
    return torch.zeros_like(logp) if g is None else g


# --------------------------------------------------------------------------- SAPO
@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0.05, 0.99))
def test_sapo_is_zero_with_zero_gradient_on_the_first_step(batch, t):
    """r = 1 everywhere (π_old recomputed with the same weights): no value, no gradient."""
    old, _, adv, mask = batch
    term, _ = sapo_term(old, old, adv, mask, t)
    assert term.item() == 0.0
    assert torch.all(_grad(lambda x: sapo_term(old, x, adv, mask, t)[0], old) == 0)


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0.05, 1.5))
def test_sapo_ignores_rollouts_with_negative_advantage(batch, t):
    old, new, adv, mask = batch
    neg = adv[:, 0] < 0
    moved = new.clone()
    moved[neg] = moved[neg] - 2.0  # any change to a negative rollout's log-probs ...
    before, _ = sapo_term(old, new, adv, mask, t)
    after, _ = sapo_term(old, moved, adv, mask, t)
    assert torch.allclose(before, after)  # ... changes nothing
    grad = _grad(lambda x: sapo_term(old, x, adv, mask, t)[0], new)
    assert torch.all(grad[neg] == 0)


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0.05, 1.5))
def test_sapo_gradient_raises_low_ratio_tokens_of_non_negative_rollouts(batch, t):
    """d term / d log π_θ = −1 / (loss tokens of Â ≥ 0 rollouts) on tokens with r ≤ t, else 0:
    minimising the loss pushes those tokens' probability up, whatever their advantage size."""
    old, new, adv, mask = batch
    rows = adv[:, 0] >= 0
    sel = mask & rows[:, None]
    grad = _grad(lambda x: sapo_term(old, x, adv, mask, t)[0], new)
    low = torch.exp(new - old) <= t
    if sel.any():
        expect = torch.where(sel & low, -1.0 / sel.sum(), torch.tensor(0.0))
        assert torch.allclose(grad, expect, atol=1e-7)
    else:
        assert torch.all(grad == 0)


def test_sapo_by_hand():
    # rollout 0 (Â = 1): r = [0.5, 0.9, 1.2], all loss tokens; rollout 1 (Â = −1) ignored.
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[0.5, 0.9, 1.2], [0.1, 0.1, 0.1]]))
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3])
    mask = torch.ones(2, 3, dtype=torch.bool)
    term, info = sapo_term(old, new, adv, mask, t=0.95)
    assert term.item() == pytest.approx((-math.log(0.5) - math.log(0.9)) / 3, rel=1e-6)
    assert info["frac_low"] == pytest.approx(2 / 3)
    term, _ = sapo_term(old, new, adv, mask, t=0.6)
    assert term.item() == pytest.approx(-math.log(0.5) / 3, rel=1e-6)


# --------------------------------------------------------------------------- turns
def _runs_reference(row: list[bool]) -> list[int]:
    out, run, prev = [], 0, False
    for m in row:
        if m and not prev:
            run += 1
        out.append(run if m else 0)
        prev = m
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=4))
def test_a_turn_is_a_maximal_run_of_loss_tokens(rows):
    ids = turn_ids(torch.tensor(rows))
    assert ids.tolist() == [_runs_reference(r) for r in rows]


# --------------------------------------------------------------------------- LLDS
OFFICIAL = dict(lam=0.2, positive="ge", gate="turn", denominator="loss_tokens")
CALIBADV = dict(lam=0.1, positive="gt", gate="none", denominator="selected")


@pytest.mark.parametrize("kw", [OFFICIAL, CALIBADV, {**OFFICIAL, "gate": "response"}])
@settings(max_examples=40, deadline=None)
@given(batch=batches())
def test_llds_is_zero_with_zero_gradient_on_the_first_step(kw, batch):
    old, _, adv, mask = batch
    term, _ = llds_term(old, old, adv, mask, **kw)
    assert term.item() == 0.0
    assert torch.all(_grad(lambda x: llds_term(old, x, adv, mask, **kw)[0], old) == 0)


@pytest.mark.parametrize("kw", [OFFICIAL, CALIBADV])
@settings(max_examples=40, deadline=None)
@given(batch=batches())
def test_llds_never_touches_negative_advantage_tokens(kw, batch):
    old, new, adv, mask = batch
    grad = _grad(lambda x: llds_term(old, x, adv, mask, **kw)[0], new)
    assert torch.all(grad[adv < 0] == 0)
    assert torch.all(grad[~mask] == 0)
    strict_zero = adv == 0
    if kw["positive"] == "gt":  # CalibAdv's LLD: Â > 0 only
        assert torch.all(grad[strict_zero] == 0)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_llds_official_penalises_only_decreases_inside_active_turns(batch):
    """Gradient = λ / (all loss tokens) on tokens with Δ > 0 of Â ≥ 0 turns whose ΣΔ > 0."""
    old, new, adv, mask = batch
    sel = mask & (adv >= 0)
    ids = turn_ids(sel)
    delta = old - new
    active = torch.zeros_like(sel)
    for i in range(sel.shape[0]):
        for run in set(ids[i].tolist()) - {0}:
            where = ids[i] == run
            active[i] |= where & (delta[i][where].sum() > 0)
    grad = _grad(lambda x: llds_term(old, x, adv, mask, **OFFICIAL)[0], new)
    expect = torch.where(active & (delta > 0), -0.2 / mask.sum(), torch.tensor(0.0))
    assert torch.allclose(grad, expect, atol=1e-7)


def test_llds_gates_by_hand():
    # one rollout, Â = 1; two turns split by an observation token:
    # turn 1 Δ = [+0.4, −0.6] (sum −0.2: inactive), turn 2 Δ = [+0.3, +0.1] (active)
    old = torch.zeros(1, 5)
    new = -torch.tensor([[0.4, -0.6, 0.0, 0.3, 0.1]])
    mask = torch.tensor([[1, 1, 0, 1, 1]], dtype=torch.bool)
    adv = torch.ones(1, 5) * mask
    turn, _ = llds_term(old, new, adv, mask, **OFFICIAL)
    assert turn.item() == pytest.approx(0.2 * (0.3 + 0.1) / 4)
    whole, _ = llds_term(old, new, adv, mask, **{**OFFICIAL, "gate": "response"})  # Σ = +0.2
    assert whole.item() == pytest.approx(0.2 * (0.4 + 0.3 + 0.1) / 4)
    calib, _ = llds_term(old, new, adv, mask, **CALIBADV)  # no gate, / 4 positive tokens
    assert calib.item() == pytest.approx(0.1 * (0.4 + 0.3 + 0.1) / 4)


def test_llds_denominators_by_hand():
    # rollout 0: Â = 1, Δ = [0.5, 0.5]; rollout 1: Â = −1 (2 loss tokens); rollout 2: Â = 0
    old = torch.zeros(3, 2)
    new = torch.tensor([[-0.5, -0.5], [-1.0, -1.0], [-0.5, -0.5]])
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    official, _ = llds_term(old, new, adv, mask, **OFFICIAL)  # Â ≥ 0: rows 0 and 2, / 6 tokens
    assert official.item() == pytest.approx(0.2 * 2.0 / 6)
    calib, _ = llds_term(old, new, adv, mask, **CALIBADV)  # Â > 0: row 0, / its 2 tokens
    assert calib.item() == pytest.approx(0.1 * 1.0 / 2)


def _ma_case():
    """One positive rollout, Δ = 0.5 on its 4 tokens; the last two are the answer."""
    old, new = torch.zeros(1, 4), torch.full((1, 4), -0.5)
    mask, adv = torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4)
    return old, new, adv, mask, torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)


def test_llds_ma_gives_answer_tokens_the_smaller_coefficient():
    old, new, adv, mask, answer = _ma_case()
    term, _ = llds_term(old, new, adv, mask, **OFFICIAL, answer_mask=answer, answer_lam=0.05)
    assert term.item() == pytest.approx((0.2 * 0.5 * 2 + 0.05 * 0.5 * 2) / 4)


# --------------------------------------------------------------------------- through verl's registry
def _loss(loss_mode: str, knobs: dict, old, new, adv, mask, n_tok=None):
    cfg = actor_config(0.2, {"loss_mode": loss_mode, "loss_agg_mode": "token-mean", "knobs": knobs})
    return policy_loss(cfg, old, new, adv, mask.float(), batch_num_tokens=n_tok or int(mask.sum()),
                       global_batch_size=mask.shape[0])


@settings(max_examples=25, deadline=None)
@given(batches())
def test_registered_losses_are_grpo_plus_their_term(batch):
    old, new, adv, mask = batch
    grpo, _ = _loss("vanilla", {}, old, new, adv, mask)
    sapo, m = _loss(SEARCH_SAPO, {"t": 0.9, "w": 0.3}, old, new, adv, mask)
    assert sapo.item() == pytest.approx(grpo.item() + 0.3 * sapo_term(old, new, adv, mask, 0.9)[0].item(),
                                        abs=1e-5)
    assert m["sapo_kl"] == pytest.approx(sapo_term(old, new, adv, mask, 0.9)[0].item(), abs=1e-6)
    llds, m = _loss(LLDS, {}, old, new, adv, mask)
    assert llds.item() == pytest.approx(grpo.item() + llds_term(old, new, adv, mask, **OFFICIAL)[0].item(),
                                        abs=1e-5)
    lld, _ = _loss(LLDS_CALIBADV, {}, old, new, adv, mask)
    assert lld.item() == pytest.approx(grpo.item() + llds_term(old, new, adv, mask, **CALIBADV)[0].item(),
                                       abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(batches(max_rows=4), st.integers(1, 3))
def test_llds_official_adds_up_over_micro_batches(batch, cut):
    """Σ over micro-batches (each weighted by its share of the mini-batch's loss tokens) equals
    the term over the whole mini-batch: the official per-token mean over all loss tokens."""
    old, new, adv, mask = batch
    cut = min(cut, old.shape[0])
    n_tok = int(mask.sum())
    whole, _ = _loss(LLDS, {}, old, new, adv, mask, n_tok)
    parts = [_loss(LLDS, {}, old[s], new[s], adv[s], mask[s], n_tok)[0]
             for s in (slice(0, cut), slice(cut, None)) if old[s].shape[0]]
    assert sum(p.item() for p in parts) == pytest.approx(whole.item(), abs=1e-5)


def test_ma_without_an_answer_mask_is_a_clear_error():
    from calibadv.errors import ConfigError

    old = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match="mask_answer"):
        _loss(LLDS, {"mask_answer": True}, old, old, torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))


# --------------------------------------------------------------------------- LLDS-MA, local backend
def test_llds_ma_answer_tokens_are_the_last_answer_span_of_the_response():
    from calibadv.agent.types import Trajectory
    from calibadv.models.tokenizer import train_tokenizer
    from calibadv.train.policy import answer_token_mask

    tok = train_tokenizer(["<think> x </think><search> q </search><answer> Ann Lee </answer>"] * 10,
                          vocab_size=300)
    think = tok.encode("<think> who </think>", add_special_tokens=False)
    answer = tok.encode("<answer> Ann Lee </answer>", add_special_tokens=False)
    ids = think + answer
    answered = Trajectory(prompt_ids=[1], response_ids=ids, loss_mask=[1] * len(ids))
    no_answer = Trajectory(prompt_ids=[1], response_ids=think, loss_mask=[1] * len(think))
    mask = answer_token_mask([answered, no_answer], tok, width=len(ids) + 2)
    assert mask[0].tolist() == [False] * len(think) + [True] * len(answer) + [False, False]
    assert not mask[1].any()


def test_llds_ma_runs_through_the_registered_loss_with_the_local_answer_mask():
    from calibadv.methods.losses import answer_mask_context

    old, new, adv, mask, answer = _ma_case()
    knobs = {"mask_answer": True, "answer_lam": 0.05}
    grpo, _ = _loss("vanilla", {}, old, new, adv, mask)
    with answer_mask_context(answer):
        ma, m = _loss(LLDS, knobs, old, new, adv, mask)
    expect = llds_term(old, new, adv, mask, **OFFICIAL, answer_mask=answer, answer_lam=0.05)[0]
    assert ma.item() == pytest.approx(grpo.item() + expect.item(), abs=1e-6)
    assert m["llds_loss"] == pytest.approx(expect.item(), abs=1e-7)
