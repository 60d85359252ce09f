"""calibrate: the CalibAdv spec as properties (hypothesis) and worked examples."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.methods.advantage import CalibConfig, calibrate, grpo_advantage, think_similarity
from calibadv.errors import ConfigError

seeds = st.integers(0, 2**31 - 1)
PLAIN = CalibConfig(soft_penalty="soft", rebalance=False)


def _has_answer(batch, i):
    return len(batch.turn_spans[i]) == len(batch.doc_ids[i]) + 1


@settings(max_examples=50, deadline=None)
@given(seed=seeds, config=st.sampled_from([PLAIN, CalibConfig(soft_penalty="uniform", rebalance=False)]))
def test_empty_silver_sets_leave_grpo_unchanged(make_batch, seed, config):
    batch = make_batch(seed)
    batch.format_ok = [False] * len(batch.format_ok)  # no rollout can be a silver source
    adv, stats = calibrate(*batch.args(), config)
    assert torch.equal(adv, grpo_advantage(batch.scores, batch.mask, batch.group_index))
    assert stats["empty_silver_frac"] == 1.0 and stats["num_scored_steps"] == 0
    assert all(c is None for c in stats["per_step_c"])


@settings(max_examples=50, deadline=None)
@given(seed=seeds, penalty=st.sampled_from(["soft", "uniform"]))
def test_penalty_touches_only_negative_rollouts_intermediate_steps(make_batch, seed, penalty):
    batch = make_batch(seed)
    config = CalibConfig(soft_penalty=penalty, rebalance=False)
    adv, stats = calibrate(*batch.args(), config)
    grpo = grpo_advantage(batch.scores, batch.mask, batch.group_index)
    a = stats["rollout_advantage"]
    for i in range(len(a)):
        if a[i] >= 0:
            assert torch.equal(adv[i], grpo[i])
            continue
        n_inter = len(batch.doc_ids[i])
        for t, (s, e) in enumerate(batch.turn_spans[i]):
            if t == n_inter:  # the answer step keeps A_i
                assert torch.equal(adv[i, s:e], grpo[i, s:e])
            elif stats["per_step_c"][i] is not None:
                factor = 1 - stats["per_step_c"][i][t] if penalty == "soft" else config.uniform_factor
                torch.testing.assert_close(adv[i, s:e], grpo[i, s:e] * factor)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, score=st.sampled_from(["official", "paper"]))
def test_a_c1_step_of_a_negative_rollout_gets_zero(make_batch, seed, score):
    batch = make_batch(seed, pool=3)  # small pools: many c = 1 steps
    adv, stats = calibrate(*batch.args(), CalibConfig(score=score, rebalance=False))
    for i, cs in enumerate(stats["per_step_c"]):
        if cs is None or stats["rollout_advantage"][i] >= 0:
            continue
        for t, c in enumerate(cs):
            s, e = batch.turn_spans[i][t]
            if c == 1.0:
                assert torch.count_nonzero(adv[i, s:e]) == 0


@settings(max_examples=50, deadline=None)
@given(seed=seeds, alpha=st.sampled_from([0.5, 1.0, 2.0]), convention=st.sampled_from(["paper", "authors"]),
       penalty=st.sampled_from(["none", "soft"]))
def test_rebalance_sets_positive_answer_mass_to_alpha_times_negative(make_batch, seed, alpha, convention, penalty):
    batch = make_batch(seed)
    config = CalibConfig(alpha=alpha, alpha_convention=convention, soft_penalty=penalty)
    adv, stats = calibrate(*batch.args(), config)
    coeff = alpha if convention == "paper" else 1 / alpha
    for g in set(batch.group_index):
        pos = neg = 0.0
        for i, gi in enumerate(batch.group_index):
            if gi == g and _has_answer(batch, i):
                s, e = batch.turn_spans[i][-1]
                values = adv[i, s:e].double()
                pos += values.clamp(min=0).sum().item()
                neg += -values.clamp(max=0).sum().item()
        if pos > 0 and neg > 0:
            assert pos == pytest.approx(coeff * neg, rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=seeds)
def test_rollout_sums_weigh_each_answer_once(make_batch, seed):
    batch = make_batch(seed)
    adv, stats = calibrate(*batch.args(), CalibConfig(rebalance_sum="rollout", soft_penalty="none"))
    for g in set(batch.group_index):
        pos = neg = 0.0
        for i, gi in enumerate(batch.group_index):
            if gi == g and _has_answer(batch, i):
                s, e = batch.turn_spans[i][-1]
                value = adv[i, s].item()  # constant over the answer span
                pos, neg = pos + max(value, 0.0), neg + max(-value, 0.0)
        if pos > 0 and neg > 0:
            assert pos == pytest.approx(neg, rel=1e-5)


@settings(max_examples=50, deadline=None)
@given(seed=seeds, config=st.sampled_from([CalibConfig(), CalibConfig(soft_penalty="uniform"), PLAIN]))
def test_masked_tokens_stay_zero(make_batch, seed, config):
    batch = make_batch(seed)
    adv, _ = calibrate(*batch.args(), config)
    assert torch.count_nonzero(adv[batch.mask == 0]) == 0


@settings(max_examples=60, deadline=None)
@given(seed=seeds)
def test_paper_and_official_scores_differ_exactly_where_the_spec_says(make_batch, seed):
    batch = make_batch(seed, pool=4, max_steps=4)
    _, official = calibrate(*batch.args(), CalibConfig(score="official"))
    _, paper = calibrate(*batch.args(), CalibConfig(score="paper"))
    silver = paper["silver_sets"]
    for i, (co, cp) in enumerate(zip(official["per_step_c"], paper["per_step_c"])):
        assert (co is None) == (cp is None)
        if co is None:
            continue
        docs, thinks = batch.doc_ids[i], batch.thinks[i]
        s_g = set(silver[batch.group_index[i]])
        for t in range(len(docs)):
            earlier_ids = set().union(*docs[:t])
            repeated = any(len(set(docs[t]) & set(d)) >= 2 for d in docs[:t]) or any(
                think_similarity(thinks[t].split(), thinks[s].split()) > 0.5 for s in range(t)
            )
            novel = set(docs[t]) & s_g - earlier_ids
            expected = 0.0 if repeated else len(novel) / len(docs[t])
            assert co[t] == pytest.approx(expected)
            assert cp[t] == pytest.approx(len(set(docs[t]) & s_g) / len(docs[t]))
            if t == 0:
                assert co[t] == cp[t]


def test_worked_example():
    """One group: rollout 0 is correct (silver = its docs); rollouts 1, 2 are wrong."""
    mask = torch.ones(3, 20)
    spans = [[[0, 4], [6, 10], [12, 15]]] * 3
    docs = [[["a", "b", "c"], ["d", "e", "f"]], [["a", "x", "y"], ["z", "d", "w"]], [["q", "r", "s"], ["q", "r", "a"]]]
    thinks = [["find a", "find b", "ans"], ["look x", "look y", "ans"], ["hmm one", "hmm one", "ans"]]
    adv, stats = calibrate(torch.tensor([1.0, 0.0, 0.2]), [True] * 3, mask, [7, 7, 7], spans, docs, thinks, PLAIN)
    assert stats["silver_sets"] == {7: ["a", "b", "c", "d", "e", "f"]}
    # rollout 1: one new silver doc per step; "look x"/"look y" are exactly 0.5 similar (not > 0.5)
    # rollout 2: step 1 shares q, r with step 0 (overlap 2) -> 0
    assert stats["per_step_c"] == [[1.0, 1.0], [1 / 3, 1 / 3], [0.0, 0.0]]
    a1 = stats["rollout_advantage"][1]
    assert adv[1, 0].item() == pytest.approx(a1 * 2 / 3)
    assert adv[1, 4].item() == pytest.approx(a1)  # observation token between turns: GRPO value
    assert stats["softpen_frac"] == pytest.approx(2 / 6)
    assert stats["penalised_c1_frac"] == 0.0
    assert stats["c_hist"] == pytest.approx({"0": 2 / 6, "1/3": 2 / 6, "2/3": 0.0, "1": 2 / 6})
    assert stats["c_mean"] == pytest.approx((1 + 1 + 1 / 3 + 1 / 3) / 6)
    assert stats["negpos_ratio_before"] == pytest.approx(1.0)
    assert stats["negpos_ratio_after"] < 1.0


def test_best_vs_all_correct_silver_sources():
    mask = torch.ones(3, 6)
    spans = [[[0, 2], [3, 5]]] * 3
    docs = [[["a", "b", "c"]], [["d", "e", "f"]], [["g", "h", "i"]]]
    thinks = [["x", "y"]] * 3
    scores = torch.tensor([1.0, 0.8, 0.0])
    _, best = calibrate(scores, [True] * 3, mask, [0, 0, 0], spans, docs, thinks, CalibConfig(silver_mode="best"))
    _, every = calibrate(scores, [True] * 3, mask, [0, 0, 0], spans, docs, thinks, CalibConfig(silver_mode="all_correct"))
    assert best["silver_sets"] == {0: ["a", "b", "c"]}
    assert every["silver_sets"] == {0: ["a", "b", "c", "d", "e", "f"]}
    _, invalid = calibrate(scores, [False, True, True], mask, [0, 0, 0], spans, docs, thinks, CalibConfig())
    assert invalid["silver_sets"] == {0: []}  # the best rollout is format-invalid; 0.8 is not the max


def test_judge_scores_plug_in_and_are_required():
    mask = torch.ones(2, 6)
    spans = [[[0, 2], [3, 5]]] * 2
    docs = [[["a", "b", "c"]], [["d", "e", "f"]]]
    config = CalibConfig(score="judge", rebalance=False)
    with pytest.raises(ConfigError, match="judge"):
        calibrate(torch.tensor([1.0, 0.0]), [True, True], mask, [0, 0], spans, docs, [["", ""]] * 2, config)
    adv, stats = calibrate(torch.tensor([1.0, 0.0]), [True, True], mask, [0, 0], spans, docs, [["", ""]] * 2,
                           config, judge_scores=[[1.0], [0.5]])
    assert stats["per_step_c"] == [[1.0], [0.5]]
    assert stats["c_hist"] == {"0": 0.0, "1/2": 0.5, "1": 0.5}
    assert adv[1, 0].item() == pytest.approx(stats["rollout_advantage"][1] * 0.5)


def test_works_on_cuda_when_present(make_batch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    batch = make_batch(3)
    cpu, _ = calibrate(*batch.args())
    batch.mask, batch.scores = batch.mask.cuda(), batch.scores.cuda()
    gpu, _ = calibrate(*batch.args())
    torch.testing.assert_close(gpu.cpu(), cpu)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"silver_mode": "some"}, "calibration.silver_mode"),
        ({"tau": 1.5}, "calibration.tau"),
        ({"score": "llm"}, "calibration.score"),
        ({"alpha": 0}, "calibration.alpha"),
        ({"rebalance": "yes"}, "calibration.rebalance"),
        ({"doc_overlap": 0}, "calibration.doc_overlap"),
        ({"alpa": 1.0}, "calibration.alpa"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        CalibConfig.from_dict(data)


def test_config_round_trips_and_accepts_ints():
    config = CalibConfig.from_dict({"alpha": 2, "tau": 1})
    assert config.alpha == 2.0 and isinstance(config.alpha, float)
    assert CalibConfig.from_dict(config.to_dict()) == config
    assert dataclasses.replace(config, alpha=1.0).alpha == 1.0


def test_shape_mismatches_are_clear_errors(make_batch):
    batch = make_batch(0)
    batch.turn_spans[0] = batch.turn_spans[0] + [[900, 901], [902, 903]]
    with pytest.raises(ValueError, match="rollout 0"):
        calibrate(*batch.args())
