"""Intervals and tests against hand computations (calibadv.evaluate.intervals)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.evaluate.intervals import (
    Survival,
    clopper_pearson,
    cluster_bootstrap,
    fmt_share,
    holm,
    kaplan_meier,
    logrank,
    median_time,
    split_bootstrap,
    two_level_bootstrap,
    wilson,
    _boot_p,
)

Z = 1.959963984540054  # the two-sided 95% normal quantile


def test_wilson_matches_the_formula_by_hand():
    # k = 45 of n = 50: p = 0.9; centre (0.9 + z²/100) / (1 + z²/50)
    p, n = 0.9, 50
    denom = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denom
    low, high = wilson(45, 50)
    assert low == pytest.approx(centre - half) and high == pytest.approx(centre + half)
    assert (low, high) == pytest.approx((0.7864, 0.9565), abs=1e-4)


def test_clopper_pearson_known_values_and_bounds():
    # 0 of 10: [0, 1 − 0.025^(1/10)] = [0, 0.3085]; 10 of 10: [0.025^(1/10), 1]
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** 0.1, 1.0))
    # 5 of 10: the textbook [0.1871, 0.8129]
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)


@given(st.integers(0, 200), st.integers(1, 200))
def test_share_intervals_stay_in_0_1_and_cover_the_share(k, n):
    k = min(k, n)
    for iv in (wilson(k, n), clopper_pearson(k, n)):
        assert 0.0 <= iv[0] <= k / n + 1e-12 and k / n - 1e-12 <= iv[1] <= 1.0


def test_share_errors_and_formatting():
    with pytest.raises(ValueError, match="k=5, n=3"):
        wilson(5, 3)
    assert fmt_share(0, 0) == "—"
    assert fmt_share(10, 10, method="exact") == "100.0 [69.2, 100.0]"


def test_holm_by_hand():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, running max 0.04)
    out = holm({"a": 0.04, "b": 0.01, "c": 0.02})
    assert out["b"] == pytest.approx((0.03, True))
    assert out["c"] == pytest.approx((0.04, True))
    assert out["a"] == pytest.approx((0.04, True))
    # the step-down stops: 0.03 x 2 = 0.06 > 0.05, and the later one keeps the running max
    out = holm({"a": 0.01, "b": 0.03, "c": 0.04})
    assert out["a"][1] and not out["b"][1] and not out["c"][1]
    assert out["b"][0] == pytest.approx(0.06) and out["c"][0] == pytest.approx(0.06)


def test_cluster_bootstrap_mean_is_the_unit_mean_and_one_group_has_no_spread():
    # mean over units (1 + 2 + 3 + 10) / 4, not over group means
    b = cluster_bootstrap({"q1": [1.0, 2.0, 3.0], "q2": [10.0]}, reps=500)
    assert b.mean == pytest.approx(4.0) and b.n_groups == 2
    # each draw is one of: both q1 (2.0), both q2 (10.0), one each (4.0)
    assert b.low == pytest.approx(2.0) and b.high == pytest.approx(10.0)
    one = cluster_bootstrap({"q": [1.0, 3.0]}, reps=100)
    assert (one.low, one.high) == (2.0, 2.0)
    assert cluster_bootstrap({"q": []}) is None


def test_bootstrap_p_value_by_hand():
    # 4 draws, one <= 0 and all four >= 0 counted on the other side: 2 (1 + 1) / 5
    assert _boot_p([-1.0, 1.0, 2.0, 3.0]) == pytest.approx(0.8)
    assert _boot_p([1.0] * 99) == pytest.approx(2 / 100)


def test_two_level_bootstrap_one_seed_is_the_question_bootstrap():
    b = two_level_bootstrap({0: {"a": 1.0, "b": 3.0}}, reps=400)
    assert b.mean == pytest.approx(2.0) and 1.0 <= b.low <= 2.0 <= b.high <= 3.0
    # two seeds that always agree per question: the seed level adds no spread
    both = two_level_bootstrap({0: {"a": 5.0}, 1: {"a": 5.0}})
    assert (both.low, both.high, both.mean) == (5.0, 5.0, 5.0)


RUNS_A = [Survival(2, True), Survival(4, True), Survival(6, False), Survival(6, True)]
RUNS_B = [Survival(4, True), Survival(8, False), Survival(8, False)]


def test_kaplan_meier_by_hand():
    # t=2: 4 at risk, 1 event -> 3/4; t=4: 3 at risk, 1 -> 3/4 * 2/3 = 1/2; t=6: 2 at risk
    # (the censored one at 6 is still at risk at 6), 1 event -> 1/2 * 1/2 = 1/4
    curve = kaplan_meier(RUNS_A)
    assert [t for t, _ in curve] == [0, 2, 4, 6]
    assert [s for _, s in curve] == pytest.approx([1, 0.75, 0.5, 0.25])
    assert median_time(RUNS_A) == 4
    assert median_time(RUNS_B) is None  # S stays at 2/3


def test_logrank_by_hand():
    # event times 2, 4, 6 (pooled). t=2: n_a=4, n_b=3, d=1, d_a=1: E=4/7, V=4*3*1*6/(49*6)
    # t=4: n_a=3, n_b=3, d=2, d_a=1: E=1, V=3*3*2*4/(36*5); t=6: n_a=2, n_b=2, d=1, d_a=1:
    # E=1/2, V=2*2*1*3/(16*3)
    o_e = (1 - 4 / 7) + (1 - 1) + (1 - 0.5)
    v = 12 / 49 + 72 / 180 + 12 / 48
    stat, p = logrank(RUNS_A, RUNS_B)
    assert stat == pytest.approx(o_e ** 2 / v)
    from scipy.stats import chi2

    assert p == pytest.approx(chi2.sf(o_e ** 2 / v, 1))
    assert logrank([Survival(3, False)], [Survival(5, False)]) == (0.0, 1.0)


# --------------------------------------------------------------------------- split bootstrap
def test_split_bootstrap_one_seed_one_split_by_hand():
    # questions 0 and 10: a resample of two is {0,0}, {0,10} or {10,10} (1/4, 1/2, 1/4), so the
    # draws are 0, 5, 10 and the 2.5% / 97.5% percentiles are the ends
    b = split_bootstrap({0: {"nq": [0.0, 10.0]}}, reps=2000)
    cell = b.splits["nq"]
    assert (cell.mean, cell.low, cell.high, cell.n_groups) == (5.0, 0.0, 10.0, 1)
    assert b.average == b.pooled == cell  # one split: the average and the pooled mean are it


def test_split_bootstrap_seed_level_by_hand():
    # paired differences constant within a seed (+10, +20, +30): the questions add nothing; the
    # mean of three seeds drawn with replacement is 10 (or 30) with probability 1/27 = 3.7% >
    # 2.5%, so the interval is [10, 30]; no draw is <= 0: p = 2 (0 + 1) / (reps + 1)
    seeds = {s: {"nq": [d] * 4, "hotpotqa": [d] * 2} for s, d in enumerate([10.0, 20.0, 30.0])}
    b = split_bootstrap(seeds, reps=2000, guard=False)
    for cell in (b.splits["nq"], b.splits["hotpotqa"], b.average, b.pooled):
        assert (cell.mean, cell.low, cell.high, cell.n_groups) == (20.0, 10.0, 30.0, 3)
        assert cell.p == pytest.approx(2 / 2001)


def test_with_three_seeds_the_weaker_of_bootstrap_and_t_is_reported_by_hand():
    # the same three seeds (+10, +20, +30): mean 20, sd 10, t(0.975, df 2) = 4.3027, so the
    # t-interval is 20 -+ 4.3027 x 10 / sqrt(3) = [-4.84, 44.84] and its p-value is
    # 2 x P(T_2 > 20 / (10 / sqrt(3)) = 3.464) = 0.0742; the bootstrap alone said [10, 30],
    # p = 0.001: the guard reports the wider interval and the larger p
    seeds = {s: {"nq": [d] * 4, "hotpotqa": [d] * 2} for s, d in enumerate([10.0, 20.0, 30.0])}
    cell = split_bootstrap(seeds, reps=2000).average
    assert cell.mean == 20.0
    assert (cell.low, cell.high) == (pytest.approx(-4.84, abs=0.01), pytest.approx(44.84, abs=0.01))
    assert cell.p == pytest.approx(0.0742, abs=1e-4)
    # five seeds: the bootstrap stands alone; one seed: the question bootstrap alone
    five = {s: {"nq": [d]} for s, d in enumerate([10.0, 20.0, 30.0, 20.0, 20.0])}
    assert split_bootstrap(five, reps=2000).average.p == pytest.approx(2 / 2001)
    one = split_bootstrap({0: {"nq": [0.0, 10.0]}}, reps=2000).average
    assert (one.low, one.high) == (0.0, 10.0)


def test_split_average_and_pooled_weigh_splits_and_questions_by_hand():
    # one seed: split a has three questions at 0, split b one at 10; the split average is
    # (0 + 10) / 2 = 5, pooled (0 + 0 + 0 + 10) / 4 = 2.5; no spread within a split
    b = split_bootstrap({0: {"a": [0.0, 0.0, 0.0], "b": [10.0]}}, reps=200)
    assert (b.average.mean, b.average.low, b.average.high) == (5.0, 5.0, 5.0)
    assert (b.pooled.mean, b.pooled.low, b.pooled.high) == (2.5, 2.5, 2.5)


def test_split_bootstrap_matches_a_direct_two_level_resampling():
    """The same two-level scheme written plainly with numpy (seeds, then questions within each
    split of each drawn seed, statistic = mean over drawn seeds of the split average), another
    random stream: the percentiles agree within Monte-Carlo error; and at one seed the spread
    is the textbook σ/√n of a mean."""
    import numpy as np

    rng = np.random.default_rng(7)
    data = {s: {"a": rng.normal(s, 3.0, 40).tolist(), "b": rng.normal(2 * s, 1.0, 25).tolist()}
            for s in range(3)}
    ours = split_bootstrap(data, reps=4000, seed=1, guard=False).average
    direct = np.empty(4000)
    r = np.random.default_rng(99)
    for i in range(4000):
        picks = r.integers(0, 3, 3)
        direct[i] = np.mean([np.mean([np.mean(r.choice(data[s][b], len(data[s][b])))
                                      for b in ("a", "b")]) for s in picks])
    low, high = np.quantile(direct, [0.025, 0.975])
    width = high - low
    assert ours.low == pytest.approx(low, abs=0.08 * width)
    assert ours.high == pytest.approx(high, abs=0.08 * width)
    # one seed, one split of 400 values: the bootstrap SD of the mean is σ_pop/√n
    vals = rng.normal(0, 5, 400)
    one = split_bootstrap({0: {"a": vals.tolist()}}, reps=4000, seed=3).splits["a"]
    se = vals.std() / math.sqrt(400)
    assert (one.high - one.low) / (2 * 1.959963984540054) == pytest.approx(se, rel=0.08)


def test_split_bootstrap_needs_the_same_splits_in_every_seed():
    with pytest.raises(ValueError, match="same non-empty splits"):
        split_bootstrap({0: {"a": [1.0]}, 1: {"b": [1.0]}})
    assert split_bootstrap({}) is None


def test_one_wilson_for_the_judge_and_the_report():
    from calibadv import shares
    from calibadv.evaluate import intervals
    from calibadv.judge import agreement

    assert agreement.wilson is intervals.wilson is shares.wilson
    assert agreement.Z95 == pytest.approx(Z)
    # the exact ends at 0 % and 100 %, and the level is honoured (90%: z = 1.645)
    assert wilson(0, 4)[0] == 0.0 and wilson(4, 4)[1] == 1.0
    z90 = 1.6448536269514722
    p, n = 0.5, 10
    half = z90 * math.sqrt(p * (1 - p) / n + z90 * z90 / (4 * n * n)) / (1 + z90 * z90 / n)
    assert wilson(5, 10, 0.90) == pytest.approx((0.5 - half, 0.5 + half))
