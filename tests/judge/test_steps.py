"""Steps as the judge sees them, the proxy-validation sample, and gold truth per step."""

from __future__ import annotations

from collections import Counter

import pytest
from dumps import rollout

from calibadv.errors import CalibAdvError
from calibadv.judge.steps import gold_truth, observations, sample_cases, step_views


def test_each_search_gets_the_observation_that_followed_it():
    row = rollout("who?", [("a", ["d1", "d2"], 1.0), ("", [], 0.0), ("b", ["d3"], 0.0)])
    obs = observations(row)
    assert obs == ["Doc 1(Title: d1) text of d1\nDoc 2(Title: d2) text of d2", "",
                   "Doc 1(Title: d3) text of d3"]
    views = step_views(row)
    assert [v.query for v in views] == ["a", "", "b"]
    assert views[2].earlier_queries == ("a", "") and views[2].step_number == 3
    assert views[0].think == "think 0 about a" and views[0].golden_answers == ["Ann"]


def test_an_information_tag_inside_a_think_is_not_taken_for_an_observation():
    row = rollout("who?", [("a", ["d1"], 1.0)])
    row["response_text"] = "<think>maybe <information>fake</information></think>" + row["response_text"]
    assert observations(row) == ["Doc 1(Title: d1) text of d1"]


def _dump(n_rollouts: int, c1_per_rollout: int) -> list[dict]:
    rows = []
    for i in range(n_rollouts):
        steps = [(f"q{i}-{t}", [f"d{i}{t}"], 1.0 if t < c1_per_rollout else 2 / 3) for t in range(3)]
        rows.append(rollout(f"question {i}", steps, qid=f"q{i}", group=i // 2))
    return rows


def test_the_sample_is_seeded_exactly_n_per_checkpoint_and_only_c_equal_1():
    dumps = {10: _dump(8, 2), 50: _dump(8, 1)}
    cases = sample_cases(dumps, per_checkpoint=5, seed=3)
    assert Counter(c.step for c in cases) == {10: 5, 50: 5}
    assert all(c.c == 1.0 for c in cases)
    assert all(dumps[c.step][c.rollout]["c"][c.turn] == 1.0 for c in cases)
    again = sample_cases(dumps, per_checkpoint=5, seed=3)
    assert [c.case_id for c in again] == [c.case_id for c in cases]
    other = sample_cases(dumps, per_checkpoint=5, seed=4)
    assert [c.case_id for c in other] != [c.case_id for c in cases]
    # adding a checkpoint leaves the others' samples alone
    more = sample_cases({**dumps, 100: _dump(4, 3)}, per_checkpoint=5, seed=3)
    assert [c.case_id for c in more if c.step != 100] == [c.case_id for c in cases]


def test_fewer_steps_come_back_when_fewer_exist():
    dumps = {1: _dump(2, 1), 2: _dump(2, 0)}
    cases = sample_cases(dumps, per_checkpoint=20, seed=0)
    assert Counter(c.step for c in cases) == {1: 2}


def test_steps_without_a_search_or_with_unscored_groups_are_never_sampled():
    rows = [rollout("q", [("", [], 1.0), ("a", ["d1"], 1.0)]), rollout("q", [("b", ["d2"], None)])]
    cases = sample_cases({1: rows}, per_checkpoint=5, seed=0)
    assert [(c.rollout, c.turn) for c in cases] == [(0, 1)]
    assert cases[0].passages == "Doc 1(Title: d1) text of d1" and cases[0].earlier_queries == [""]


def test_min_c_widens_the_sample_to_lower_scores():
    dumps = {1: _dump(2, 1)}
    assert len(sample_cases(dumps, 10, 0, min_c=0.5)) == 6


def test_bad_sample_settings_are_errors():
    with pytest.raises(CalibAdvError, match="per_checkpoint"):
        sample_cases({1: _dump(1, 1)}, 0, 0)
    with pytest.raises(CalibAdvError, match="dump_rollouts_at"):
        sample_cases({}, 5, 0)


# step docs, by hand: gold g1 (hop 1), g2 (hop 2)
GOLD_TABLE = [
    # doc_ids per step               step  hit    advanced
    ([["x"], ["g1"], ["g1", "y"]],   0,    False, False),
    ([["x"], ["g1"], ["g1", "y"]],   1,    True,  True),
    ([["x"], ["g1"], ["g1", "y"]],   2,    True,  False),   # hop 1 already reached
    ([["g1"], ["g2"]],               1,    True,  True),    # a new hop
    ([["g1"], ["g1b"]],              1,    True,  False),   # another passage of a reached hop
]


@pytest.mark.parametrize("docs, t, hit, advanced", GOLD_TABLE)
def test_gold_truth_by_hand(docs, t, hit, advanced):
    row = rollout("q", [(f"s{k}", d, 1.0) for k, d in enumerate(docs)], gold=["g1", "g1b", "g2"])
    assert gold_truth(row, t, hops=[["g1", "g1b"], ["g2"]]) == {"hit": hit, "advanced": advanced}


def test_without_hops_advancing_means_a_new_gold_passage():
    row = rollout("q", [("a", ["g1"], 1.0), ("b", ["g1b"], 1.0)], gold=["g1", "g1b"])
    assert gold_truth(row, 1) == {"hit": True, "advanced": True}
    assert gold_truth(rollout("q", [("a", ["g1"], 1.0)]), 0) is None  # no gold: real world


def test_the_searched_pool_takes_every_searched_step_whatever_its_c():
    rows = [rollout("q", [("a", ["d1"], None), ("", [], None)]),
            rollout("q", [("b", ["d2"], 0.0), ("c", ["d3"], 1.0)])]
    assert sample_cases({1: rows}, 5, 0) and len(sample_cases({1: rows}, 5, 0)) == 1
    cases = sample_cases({1: rows}, 5, 0, pool="searched")
    assert [(c.rollout, c.turn, c.c) for c in cases] == [(0, 0, None), (1, 0, 0.0), (1, 1, 1.0)]
    with pytest.raises(CalibAdvError, match="judge.sample.steps"):
        sample_cases({1: rows}, 5, 0, pool="all")
