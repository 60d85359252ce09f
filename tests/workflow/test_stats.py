"""Aggregation over seeds (calibadv.report.stats): the mean with a 95% Student-t interval and
paired effect sizes, by hand and as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.report.stats import Interval, band, fmt_interval, n_label, paired_effect, t_interval

# t_{0.975, df} from a printed t table
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 29: 2.045}


@pytest.mark.parametrize(
    "values, mean, half",
    [
        ([1.0, 3.0], 2.0, 12.706 * math.sqrt(2.0) / math.sqrt(2)),  # s = √2, s/√n = 1
        ([10.0, 20.0, 30.0], 20.0, 4.303 * 10.0 / math.sqrt(3)),  # s = 10
        ([5.0, 5.0, 5.0, 5.0], 5.0, 0.0),  # no spread, no width
        ([0.0, 1.0, 2.0, 3.0, 4.0], 2.0, 2.776 * math.sqrt(2.5) / math.sqrt(5)),  # s² = 2.5
    ],
)
def test_t_interval_by_hand(values, mean, half):
    iv = t_interval(values)
    assert iv.n == len(values) and iv.mean == pytest.approx(mean)
    assert iv.half == pytest.approx(half, rel=1e-3, abs=1e-9)  # the table has 3 decimals


def test_one_seed_has_no_interval_and_says_so():
    iv = t_interval([42.0])
    assert iv == Interval(42.0, None, 1) and iv.low is None
    assert fmt_interval(iv) == "42.00" and n_label([1]) == "n=1, no interval"
    assert band([42.0]) == (42.0, 42.0)  # a plain line, no band


def test_nothing_measured_is_none_and_missing_values_are_skipped():
    assert t_interval([]) is None and fmt_interval(None) == "—"
    assert t_interval([1.0, None, float("nan"), 3.0]).n == 2  # type: ignore[list-item]
    assert n_label([]) == "n=0" and n_label([2, 3]) == "n=2–3"


def test_paired_effect_uses_the_seeds_both_ran_by_hand():
    ours = {0: 60.0, 1: 70.0, 2: 65.0}
    ref = {0: 50.0, 1: 40.0}  # seed 2 of the reference missing: two pairs, differences 10 and 30
    iv = paired_effect(ours, ref)
    assert iv.n == 2 and iv.mean == pytest.approx(20.0)
    assert iv.half == pytest.approx(12.706 * 10.0, abs=1e-2)  # s = 14.14, s/√2 = 10
    assert fmt_interval(iv, signed=True) == "+20.00 ± 127.06"
    assert paired_effect({0: 1.0}, {1: 1.0}) is None  # no shared seed


def test_t_quantiles_match_the_printed_table():
    from calibadv.report.stats import t_quantile

    for df, value in T_TABLE.items():
        assert t_quantile(df) == pytest.approx(value, abs=1e-3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0)


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@given(st.lists(finite, min_size=2, max_size=12))
def test_the_interval_holds_the_mean_and_narrows_with_the_level(values):
    iv = t_interval(values)
    assert min(values) - 1e-9 <= iv.mean <= max(values) + 1e-9
    assert iv.half >= 0 and iv.low <= iv.mean <= iv.high
    assert t_interval(values, level=0.5).half <= iv.half + 1e-12


@given(st.lists(finite, min_size=2, max_size=12), finite)
def test_shifting_every_value_shifts_the_mean_not_the_width(values, shift):
    a, b = t_interval(values), t_interval([v + shift for v in values])
    assert b.mean == pytest.approx(a.mean + shift, abs=1e-6)
    assert b.half == pytest.approx(a.half, abs=1e-6)


@given(st.dictionaries(st.integers(0, 20), finite, min_size=1, max_size=8), finite)
def test_a_constant_gap_is_an_effect_of_that_size_with_no_spread(ref, gap):
    iv = paired_effect({s: v + gap for s, v in ref.items()}, ref)
    assert iv.mean == pytest.approx(gap, abs=1e-6) and iv.n == len(ref)
    assert iv.half is None if len(ref) == 1 else iv.half == pytest.approx(0.0, abs=1e-6)


@given(st.dictionaries(st.integers(0, 20), finite, min_size=2, max_size=8),
       st.dictionaries(st.integers(0, 20), finite, min_size=2, max_size=8))
def test_swapping_the_methods_flips_the_effect(a, b):
    ab, ba = paired_effect(a, b), paired_effect(b, a)
    if ab is None:
        assert ba is None
    else:
        assert ab.mean == pytest.approx(-ba.mean, abs=1e-6) and ab.half == ba.half


def test_an_effect_between_two_all_zero_methods_is_a_structural_zero():
    from calibadv.report.stats import effect_or_structural_zero

    assert effect_or_structural_zero({0: 0.0, 1: 0.0}, {0: 0.0, 1: 0.0}) is None  # "—"
    iv = effect_or_structural_zero({0: 0.0, 1: 2.0}, {0: 0.0, 1: 0.0})  # a measured zero-ish
    assert iv.mean == 1.0 and iv.n == 2
    assert fmt_interval(effect_or_structural_zero({0: 0.0}, {0: 0.0})) == "—"


def test_a_seed_effect_is_the_seed_bootstrap_of_the_per_seed_differences_by_hand():
    """One number per run (Table 9's validation F1): differences 10 and 30 over seeds 0 and 1
    (seed 2 of the reference missing). The mean of two seeds drawn with replacement is 10, 20
    or 30 (1/4, 1/2, 1/4): [10, 30] around 20; no draw is <= 0, so p = 2·(0 + 1)/2001."""
    from calibadv.report.questions import seed_effect
    from calibadv.report.stats import Bounds, interval_label

    from calibadv.evaluate import intervals

    # by default two seeds report the weaker t-interval: 20 -+ 12.706 x 10, p = 0.295
    guarded = seed_effect({0: 60.0, 1: 70.0, 2: 65.0}, {0: 50.0, 1: 40.0})
    assert (round(guarded.low, 2), round(guarded.high, 2)) == (-107.06, 147.06)
    assert guarded.p == pytest.approx(0.2952, abs=1e-4)
    with pytest.MonkeyPatch.context() as mp:  # the bootstrap alone
        mp.setattr(intervals, "MIN_BOOTSTRAP_SEEDS", 2)
        cell = seed_effect({0: 60.0, 1: 70.0, 2: 65.0}, {0: 50.0, 1: 40.0})
    assert (cell.mean, cell.low, cell.high, cell.n, cell.how) == (20.0, 10.0, 30.0, 2, "seeds")
    assert cell.p == pytest.approx(2 / 2001)
    assert fmt_interval(cell, signed=True) == "+20.00 [+10.00, +30.00]"
    # one shared seed: the difference alone, no interval and no p (nothing to resample)
    assert seed_effect({0: 5.0}, {0: 2.0}) == Bounds(3.0, None, None, 1, how="seeds")
    assert seed_effect({0: 0.0, 1: 0.0}, {0: 0.0, 1: 0.0}) is None  # a structural zero: "—"
    assert seed_effect({0: 1.0}, {1: 1.0}) is None  # no shared seed
    # a row says what each of its cells resamples
    two_level = Bounds(1.0, 0.0, 2.0, 2)
    assert interval_label([cell]) == "n=2; seed bootstrap"
    assert interval_label([two_level, cell]) == "n=2; 2-level bootstrap + seed bootstrap"
    assert interval_label([two_level, Bounds(50.0, 40.0, 60.0, 2, how="wilson")]) == \
        "n=2; 2-level bootstrap"
