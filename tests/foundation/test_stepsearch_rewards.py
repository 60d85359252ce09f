"""StepSearch's rewards (calibadv.methods.stepsearch_reward) against by-hand values."""

from __future__ import annotations

import pytest

from calibadv.errors import ConfigError
from calibadv.methods.stepsearch_reward import (
    check_stepsearch_data,
    final_reward,
    gold_similarities,
    search_key_score,
    step_rewards,
)

GOLDS = ["alpha beta", "gamma delta"]


def test_tfidf_similarity_by_hand():
    """Fit on ["alpha gamma", "alpha beta", "gamma delta"]: smooth idf ln(4/3)+1 for alpha and
    gamma, ln 2 + 1 for beta and delta; cos("alpha gamma", "alpha beta") = 0.7071 · 1.28768 /
    √(1.28768² + 1.69315²) = 0.42804 (and the same with "gamma delta")."""
    assert gold_similarities("alpha gamma", GOLDS) == pytest.approx([0.42804, 0.42804], abs=1e-4)
    assert gold_similarities("alpha beta", GOLDS) == pytest.approx([1.0, 0.0], abs=1e-9)
    assert gold_similarities("", []) == []


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        # | step docs                          | gain                 | redundancy | reward |
        ([[("d1", "alpha beta")]], [(0.5, 0.0, 0.3)]),
        ([[("d1", "alpha beta")], [("d1", "alpha beta"), ("d2", "gamma delta")]],
         [(0.5, 0.0, 0.3), (0.5, 0.5, 0.0)]),
        ([[("d3", "epsilon")], [("d1", "alpha beta")], [("d1", "alpha beta")]],
         [(0.0, 0.0, 0.0), (0.5, 0.0, 0.3), (0.0, 1.0, -0.6)]),
        ([[("d4", "alpha gamma")], [("d1", "alpha beta")]],
         [(0.42804, 0.0, 0.6 * 0.42804), ((1 - 0.42804) / 2, 0.0, 0.6 * (1 - 0.42804) / 2)]),
        ([[]], [(0.0, 0.0, 0.0)]),
    ],
)
def test_step_rewards_by_hand(steps, want):
    got = [(s.gain, s.redundancy, s.reward) for s in step_rewards(steps, GOLDS)]
    assert got == [pytest.approx(w, abs=1e-4) for w in want]


def test_search_key_score_and_final_reward_by_hand():
    """Groups: "capital of France" (F1 1 with the first query) and "longest river in France"
    (best: "river Paris", F1 = 2·(1/2·1/4)/(1/2+1/4) = 1/3): score (1 + 1/3)/2 = 2/3."""
    queries = ["capital of France", "river Paris"]
    keys = [["capital of France"], ["longest river in France"]]
    assert search_key_score(queries, keys) == pytest.approx(2 / 3)
    assert search_key_score(queries, []) == 0.0
    text = "<search>capital of France</search><information>…</information><answer> Paris </answer>"
    assert final_reward(text, ["Paris"], queries, keys) == pytest.approx(1 + 0.618 * 2 / 3)
    assert final_reward(text, ["Paris"], queries, []) == pytest.approx(1.0)
    assert final_reward(text + " trailing", ["Paris"], queries, keys) is None  # malformed: −1


def test_data_without_gold_documents_or_sub_queries_is_refused_by_name():
    check_stepsearch_data([{"gold_docs": ["p"], "sub_query_keys": [["k"]]}], "train.parquet")
    with pytest.raises(ConfigError, match=r"train\.parquet: row 1 has no sub_query_keys; .*released training set"):
        check_stepsearch_data([{"gold_docs": ["p"], "sub_query_keys": [["k"]]}, {"gold_docs": ["p"]}],
                              "train.parquet")
