"""StepSearch's rewards (calibadv.methods.stepsearch_reward) against by-hand values from the
official code, Zillwang/StepSearch@43215bab9118 verl/utils/reward_score/qa_step.py (line
numbers in each test) and submodule.py (subm_tfidf_cosine)."""

from __future__ import annotations

import pytest

from calibadv.errors import ConfigError
from calibadv.methods.stepsearch_reward import (
    check_stepsearch_data,
    final_reward,
    gold_similarities,
    passage_content,
    search_key_score,
    step_documents,
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
        # qa_step.py L106-153 | step docs            | gain | redundancy | score = gain − red |
        ([[("d1", "alpha beta")]], [(0.5, 0.0, 0.5)]),
        ([[("d1", "alpha beta")], [("d1", "alpha beta"), ("d2", "gamma delta")]],
         [(0.5, 0.0, 0.5), (0.5, 0.5, 0.0)]),
        ([[("d3", "epsilon")], [("d1", "alpha beta")], [("d1", "alpha beta")]],
         [(0.0, 0.0, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, -1.0)]),
        ([[("d4", "alpha gamma")], [("d1", "alpha beta")]],
         [(0.42804, 0.0, 0.42804), ((1 - 0.42804) / 2, 0.0, (1 - 0.42804) / 2)]),
        # the same content twice in one step: the second copy is already seen (L145-148)
        ([[("d1", "alpha beta"), ("d1", "alpha beta")]], [(0.5, 0.5, 0.0)]),
        ([[]], [(0.0, 0.0, 0.0)]),
    ],
)
def test_step_rewards_by_hand(steps, want):
    got = [(s.gain, s.redundancy, s.score) for s in step_rewards(steps, GOLDS)]
    assert got == [pytest.approx(w, abs=1e-4) for w in want]


def test_tfidf_scores_the_normalised_passage_content():
    """qa_step.py L54-66 (content after the title marker), L121 and L130 (normalize_answer on
    gold and passage): "Doc 1(Title: Alpha) The alpha, beta!" scores as "alpha beta", a perfect
    match of gold 0 (raw, the head and "the" would count as words: cosine < 1)."""
    block = "Doc 1(Title: Alpha) The alpha, beta!\nDoc 2(Title: Paris (film)) A film."
    rollout = {"queries": ["q"], "doc_ids": [["d1", "d2"]],
               "response_text": f"<search>q</search><information>{block}</information>"}
    docs = step_documents(rollout)
    assert docs == [[("d1", "The alpha, beta!"), ("d2", "A film.")]]
    assert passage_content("Doc 3(Title: ) ") == ""
    (step,) = step_rewards(docs, GOLDS)
    assert step.gain == pytest.approx(0.5, abs=1e-9) and step.redundancy == 0.0


def test_a_hop_searched_twice_keeps_its_last_query():
    """qa_step.py L176-216: each query credits its best key group, a later one overwrites.
    Queries "capital of France" (group 0, F1 1), "longest river in France" (group 1, F1 1),
    "France capital" (group 0: P 1, R 2/3 → F1 0.8; group 1: 1/3): group 0 ends at 0.8, so the
    score is (0.8 + 1)/2 = 0.9 (best per group would give 1), and "weather" matches nothing."""
    keys = [["capital of France"], ["longest river in France"]]
    queries = ["capital of France", "longest river in France", "France capital", "weather"]
    assert search_key_score(queries, keys) == pytest.approx(0.9)
    text = "<search>q</search><information>…</information><answer>Paris</answer>"
    assert final_reward(text, ["Paris"], queries, keys) == pytest.approx(1 + 0.618 * 0.9)


def test_search_key_score_and_final_reward_by_hand():
    """Groups: "capital of France" (F1 1 with the first query) and "longest river in France"
    ("river Paris", F1 = 2·(1/2·1/4)/(1/2+1/4) = 1/3, rounded to 4 decimals as query_f1_score
    L104): score (1 + 0.3333)/2; anything after the last </answer> is malformed (L155-173)."""
    queries = ["capital of France", "river Paris"]
    keys = [["capital of France"], ["longest river in France"]]
    assert search_key_score(queries, keys) == pytest.approx((1 + 0.3333) / 2)
    assert search_key_score(queries, []) == 0.0
    text = "<search>capital of France</search><information>…</information><answer> Paris </answer>"
    assert final_reward(text, ["Paris"], queries, keys) == pytest.approx(1 + 0.618 * (1 + 0.3333) / 2)
    assert final_reward(text, ["Paris"], queries, []) == pytest.approx(1.0)
    assert final_reward(text + " trailing", ["Paris"], queries, keys) is None  # malformed: −1


def test_data_without_gold_documents_or_sub_queries_is_refused_by_name():
    check_stepsearch_data([{"gold_docs": ["p"], "sub_query_keys": [["k"]]}], "train.parquet")
    with pytest.raises(ConfigError, match=r"train\.parquet: row 1 has no sub_query_keys; .*released training set"):
        check_stepsearch_data([{"gold_docs": ["p"], "sub_query_keys": [["k"]]}, {"gold_docs": ["p"]}],
                              "train.parquet")
