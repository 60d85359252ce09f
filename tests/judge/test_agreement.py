"""Wilson intervals and Cohen's kappa (Table 5): by hand, against scipy/statsmodels-free
closed forms, and as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.judge.agreement import Z95, cohen_kappa, wilson
from calibadv.judge.client import Verdict
from calibadv.judge.steps import sample_cases
from calibadv.judge.validate import summarise


def test_wilson_by_hand():
    # k = 8 of n = 10: p = 0.8, z² = 3.8415; centre = (0.8 + 0.19207) / 1.38415 = 0.71674,
    # half = 1.96 · √(0.016 + 0.0096037) / 1.38415 = 0.22657 (Wilson 1927; Agresti & Coull 1998)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 4)[0] == 0.0 and wilson(0, 4)[1] == pytest.approx(Z95**2 / (4 + Z95**2))
    assert wilson(0, 0) is None


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_holds_the_share_inside_zero_one(kn):
    k, n = kn
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert high - low > 0  # never collapses to a point, not even at 0 % or 100 %


def test_kappa_by_hand():
    # Cohen (1960) eq. 1 on a 2x2 table: a=20 (yes,yes) b=5 c=10 d=15, n=50:
    # p_o = 35/50 = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, kappa = 0.4
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True)] * 3) is None  # both constant: chance agreement is 1


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_a_constant_rater_has_kappa_zero_whatever_the_truth(truth):
    kappa = cohen_kappa([(True, t) for t in truth])
    assert kappa is None if all(truth) else kappa == pytest.approx(0.0, abs=1e-12)


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_kappa_is_symmetric_and_at_most_one(pairs):
    k = cohen_kappa(pairs)
    if k is None:
        return
    assert k <= 1.0 + 1e-12 and not math.isnan(k)
    assert k == pytest.approx(cohen_kappa([(b, a) for a, b in pairs]))
    assert cohen_kappa([(a, a) for a, _ in pairs]) in (1.0, None)


def test_a_judge_that_always_says_helpful_reads_as_kappa_zero():
    from test_validation import _dumps

    cases = sample_cases(_dumps(), 2, 0)
    adv = [c.gold["advanced"] for c in cases]
    assert 0 < sum(adv) < len(adv)  # the sample has both kinds of steps
    always = {c.case_id: Verdict("k", 1.0, "ok") for c in cases}
    o = summarise(cases, always)["overall"]
    assert o["llm_agree_advanced"] == sum(adv) / len(adv)  # raw agreement looks like skill …
    assert o["llm_kappa_advanced"] == 0.0  # … kappa says it is none
    assert o["const_agree_advanced"] == max(sum(adv), len(adv) - sum(adv)) / len(adv)
    assert o["counts"]["llm_agree_advanced"] == [sum(adv), len(adv)]
