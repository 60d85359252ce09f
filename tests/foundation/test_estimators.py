"""Advantage estimators (calibadv.methods.estimators): the registry, and GiGPO, MT-GRPO and Tree-GRPO
against by-hand computations from docs/baselines.md."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.methods.advantage import CalibConfig, calibrate, grpo_advantage
from calibadv.agent.protocol import INVALID_ACTION_MESSAGE
from calibadv.errors import ConfigError
from calibadv.methods.estimators import (
    EstimatorBatch,
    estimate,
    gigpo_advantage,
    mt_grpo_advantage,
    observations,
    step_anchors,
    step_groups,
    tree_grpo_advantage,
)
from calibadv.methods.presets import get_method
from calibadv.methods.catalog import names
from calibadv.methods.registry import ESTIMATORS

R3 = math.sqrt(3.0)
R2 = math.sqrt(2.0)


def _rollout(spans, queries, doc_ids, text="", stop="answer", answer=None, golds=(), fmt=True,
             thinks=None, tree=None):
    r = {"turn_spans": spans, "queries": queries, "doc_ids": doc_ids, "response_text": text,
         "stop_reason": stop, "answer": answer, "golden_answers": list(golds), "format_ok": fmt,
         "thinks": thinks if thinks is not None else ["t"] * len(spans)}
    if tree is not None:
        r["tree"] = tree
    return r


# --------------------------------------------------------------------------- registry
def test_the_registry_holds_every_estimator_and_presets_name_them():
    assert {"calibadv", "grpo", "gigpo", "mt_grpo", "tree_grpo"} <= set(names(ESTIMATORS))
    assert get_method("gigpo")["estimator"]["name"] == "gigpo"
    assert get_method("mt-grpo")["estimator"]["name"] == "mt_grpo"
    tree = get_method("tree-grpo")
    assert tree["estimator"]["name"] == "tree_grpo"
    assert tree["rollout"] == {"name": "tree", "knobs": {"m": 2, "n": 2, "l": 1, "k": 3}}
    for ladder in ("search-r1", "calibadv", "simpletir"):  # unchanged presets name neither
        assert "estimator" not in get_method(ladder) and "rollout" not in get_method(ladder)


def test_an_unknown_estimator_or_knob_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="'gipgo' is not a registered advantage estimator"):
        get_method("x", extra_presets={"x": {"base": "search-r1", "estimator": {"name": "gipgo"}}})
    with pytest.raises(ConfigError, match=r"methods\.x\.estimator\.knobs\.gama"):
        get_method("x", extra_presets={"x": {"base": "gigpo", "estimator": {"knobs": {"gama": 1}}}})
    with pytest.raises(ConfigError, match=r"k = 5: a tree has only"):
        from calibadv.methods.rollout_shapes import rollouts_per_prompt

        rollouts_per_prompt("tree", {"k": 5}, 5)


def _batch(n=4, width=6):
    rs = [_rollout([[0, 2], [4, 6]], ["q"], [["d1", "d2"]], text="<information>x</information>")
          for _ in range(n)]
    mask = torch.ones(n, width)
    mask[:, 2:4] = 0
    return EstimatorBatch(torch.tensor([1.0, 0.0, 0.5, 0.0][:n]), mask, [0, 0, 1, 1][:n], rs,
                          CalibConfig(soft_penalty="none", rebalance=False))


def test_calibadv_through_the_registry_is_calibrate_itself():
    b = _batch()
    b.calib = CalibConfig()
    got, stats = estimate("calibadv", None, b)
    want, want_stats = calibrate(b.scores, torch.tensor([True] * 4), b.response_mask, b.groups,
                                 [r["turn_spans"] for r in b.rollouts],
                                 [r["doc_ids"] for r in b.rollouts],
                                 [r["thinks"] for r in b.rollouts], b.calib)
    assert torch.equal(got, want) and stats["rollout_advantage"] == want_stats["rollout_advantage"]


def test_grpo_through_the_registry_is_grpo_advantage():
    b = _batch()
    got, _ = estimate("grpo", {}, b)
    assert torch.equal(got, grpo_advantage(b.scores, b.response_mask, b.groups))


# --------------------------------------------------------------------------- GiGPO
# Official: verl-agent (langfengQ/verl-agent through vanzll/verl-agent@d0b97244c50f):
# gigpo/core_gigpo.py L174-240 episode_norm_reward (compute_mean_std_cross_steps=True, L214-222:
# every step row of the prompt enters the mean/std), L334-376 step_norm_reward,
# agent_system/reward_manager/episode.py L72-79 (R on every step row),
# verl/trainer/ppo/ray_trainer.py L200-220 apply_invalid_action_penalty (subtracts p from the
# row's score and from step_rewards), L1112-1116 (step_rewards = discounted returns) before
# L1203-1205 (the penalty): the penalty comes after discounting.
S3 = math.sqrt(0.3)


def test_gigpo_unequal_rollout_lengths_by_hand():
    """One prompt, three rollouts, γ = 0.5, ω = 1 (tokens 2-3 are an observation: masked).

    Episode scores per step row: [1, 1 | 0, 0 | 0] → mean 2/5, unbiased std √0.3:
    A^E = 0.6/√0.3 for R = 1, −0.4/√0.3 for R = 0 (over rollouts it would be 2/√3, −1/√3).

    | rollout | R | steps: return G, anchor   | step groups                                 |
    | 0       | 1 | (0.5, ""), (1, "obsA")    | "": G = [0.5, 0, 0] → [2/√3, -1/√3, -1/√3]  |
    | 1       | 0 | (0, ""),   (0, "obsA")    | "obsA": G = [1, 0] → [1/√2, -1/√2]          |
    | 2       | 0 | (0, "")                   |                                             |
    """
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0], [1, 1, 0, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]],
                        dtype=torch.float32)
    adv, stats = gigpo_advantage(
        torch.tensor([1.0, 0.0, 0.0]), mask, [7, 7, 7],
        turn_spans=[[[0, 2], [4, 6]], [[0, 2], [4, 6]], [[0, 3]]],
        step_rewards=[[0.0, 1.0], [0.0, 0.0], [0.0]],
        anchors=[["", "obsA"], ["", "obsA"], [""]],
        gamma=0.5, omega=1.0, similarity=None, eps=0.0)
    pos, neg = 0.6 / S3, -0.4 / S3
    a, b = pos + 2 / R3, pos + 1 / R2
    c, d = neg - 1 / R3, neg - 1 / R2
    want = torch.tensor([[a, a, 0, 0, b, b, 0],
                         [c, c, 0, 0, d, d, 0],
                         [c, c, c, 0, 0, 0, 0]])
    assert torch.allclose(adv, want, atol=1e-5)
    assert stats["gigpo_step_groups"] == 2 and stats["gigpo_singleton_frac"] == 0.0
    assert stats["rollout_advantage"] == pytest.approx([pos, neg, neg], abs=1e-5)


def test_gigpo_invalid_step_penalised_after_discounting_by_hand():
    """Two rollouts with R = 1 and two steps, γ = 0.5, p = 0.5; rollout 0's step 1 is invalid.

    Official (penalty after discounting): returns r0 = [0.5, 1 − 0.5], r1 = [0.5, 1]; the
    step-0 group ("") holds [0.5, 0.5] → A^S = 0 (a penalty before discounting would flow back:
    [0.25, 0.5] → ∓1/√2). Episode rows [1, 0.5 | 1, 1] → mean 0.875, std 0.25 →
    A^E = [0.5, −1.5 | 0.5, 0.5]. Step 1 anchors differ: singletons, A^S = 0."""
    mask = torch.ones(2, 4)
    adv, _ = gigpo_advantage(
        torch.tensor([1.0, 1.0]), mask, [0, 0], turn_spans=[[[0, 2], [2, 4]]] * 2,
        step_rewards=[[0.0, 1.0], [0.0, 1.0]], anchors=[["", "obsA"], ["", "obsB"]],
        gamma=0.5, omega=1.0, similarity=None, eps=1e-6,
        invalid=[[False, True], [False, False]], invalid_penalty=0.5)
    want = torch.tensor([[0.5, 0.5, -1.5, -1.5], [0.5, 0.5, 0.5, 0.5]])
    assert torch.allclose(adv, want, atol=1e-4)


def test_gigpo_singleton_step_groups_get_no_step_advantage_and_omega_scales_it():
    mask = torch.ones(2, 4)
    common = dict(turn_spans=[[[0, 2], [2, 4]]] * 2, step_rewards=[[0.0, 1.0], [0.0, 0.0]],
                  anchors=[["", "obsA"], ["", "obsB"]], gamma=1.0, similarity=None, eps=0.0)
    adv, stats = gigpo_advantage(torch.tensor([1.0, 0.0]), mask, [0, 0], omega=0.5, **common)
    # episode rows [1, 1, 0, 0]: A^E = ±0.5/√(1/3) = ±√3/2; step 0 group: G = [1, 0] → ±1/√2;
    # later steps are singletons → 0
    e, s = R3 / 2, 1 / R2
    assert torch.allclose(adv, torch.tensor([[e + 0.5 * s] * 2 + [e] * 2,
                                             [-e - 0.5 * s] * 2 + [-e] * 2]), atol=1e-6)
    assert stats["gigpo_singleton_frac"] == pytest.approx(2 / 3)


def test_step_groups_match_equal_or_difflib_similar_anchors():
    anchors = ["abcdefghij", "abcdefghiX", "zzzz", "abcdefghij"]  # ratio("…j", "…X") = 0.9
    assert step_groups(anchors, 0.9) == [0, 0, 1, 0]
    assert step_groups(anchors, 0.95) == [0, 1, 2, 0]
    assert step_groups(anchors, None) == [0, 1, 2, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(-1, 1, width=32), st.integers(1, 3)),
                min_size=1, max_size=8))
def test_gigpo_with_all_singleton_step_groups_is_grpo_over_step_rows(rows):
    """Every step its own anchor → A^S = 0 everywhere → each turn gets GRPO's z-score of R
    computed over the prompt's step rows (a rollout of n steps counts n times)."""
    groups = [g for g, _, _ in rows]
    scores = torch.tensor([r for _, r, _ in rows], dtype=torch.float32)
    width = 2 * max(n for _, _, n in rows)
    mask = torch.zeros(len(rows), width)
    spans, rewards, anchors = [], [], []
    row_scores, row_groups, owner = [], [], []
    for i, (g, r, n) in enumerate(rows):
        mask[i, : 2 * n] = 1
        spans.append([[2 * t, 2 * t + 2] for t in range(n)])
        rewards.append([0.0] * (n - 1) + [r])
        anchors.append([f"{i}/{t}" for t in range(n)])
        row_scores += [r] * n
        row_groups += [g] * n
        owner += [(i, t) for t in range(n)]
    adv, _ = gigpo_advantage(scores, mask, groups, spans, rewards, anchors, similarity=None)
    per_row = grpo_advantage(torch.tensor(row_scores), torch.ones(len(owner), 1), row_groups)[:, 0]
    want = torch.zeros_like(mask)
    for (i, t), v in zip(owner, per_row.tolist()):
        want[i, 2 * t: 2 * t + 2] = v
    assert torch.allclose(adv, want, atol=1e-5)


def test_gigpo_reads_anchors_and_void_penalties_from_rollouts():
    info_a = "<information>Doc 1 Paris is the capital</information>"
    text = f"<search> a </search>\n\n{info_a}\n\n<answer> x </answer>"
    r0 = _rollout([[0, 2], [4, 6]], ["a"], [["d"]], text=text)
    r1 = _rollout([[0, 2], [4, 6]], [""], [[]], text="bad" + INVALID_ACTION_MESSAGE + "<answer>")
    assert observations(r0) == ["Doc 1 Paris is the capital"]
    assert step_anchors(r0) == ["", "Doc 1 Paris is the capital"]
    assert step_anchors(r1) == ["", INVALID_ACTION_MESSAGE]
    mask = torch.ones(2, 6)
    batch = EstimatorBatch(torch.tensor([1.0, 1.0]), mask, [0, 0], [r0, r1], CalibConfig())
    adv, _ = estimate("gigpo", {"gamma": 1.0, "invalid_penalty": 0.5}, batch)
    # episode rows [1, 1 | 1 − 0.5, 1] → mean 0.875, std 0.25 → A^E = [0.5, 0.5 | −1.5, 0.5];
    # step 0 (anchor ""): G = [1, 1 − 0.5] → ±1/√2; step 1 anchors differ → A^S = 0
    assert adv[0, 0].item() == pytest.approx(0.5 + 1 / R2, abs=1e-4)
    assert adv[1, 0].item() == pytest.approx(-1.5 - 1 / R2, abs=1e-4)
    assert torch.allclose(adv[:, 4:], torch.full((2, 2), 0.5), atol=1e-4)


# --------------------------------------------------------------------------- MT-GRPO
def test_mt_grpo_by_hand():
    """| R_T | R_O | tool | first turn | later tokens |
       | 0.7 | 2.5 | yes  | A_O + A_T = 1.05963 + 1.10940 | 1.05963 |
       | 0.2 | 1.0 | yes  | -0.13245 - 0.27735            | -0.13245 |
       | 0.0 | 0.0 | no   | z(R_T+R_O) = -0.90726 everywhere (z of [3.2, 1.2, 0])  |"""
    mask = torch.ones(3, 4)
    adv, stats = mt_grpo_advantage([0.7, 0.2, 0.0], [2.5, 1.0, 0.0], [True, True, False],
                                   [2, 2, 2], mask, ["p"] * 3, lam=1.0, eps=0.0)
    want = torch.tensor([[1.05963 + 1.10940] * 2 + [1.05963] * 2,
                         [-0.13245 - 0.27735] * 2 + [-0.13245] * 2,
                         [-0.90726] * 4])
    assert torch.allclose(adv, want, atol=1e-4)
    assert stats["mt_tool_frac"] == pytest.approx(2 / 3)


def test_mt_grpo_rewards_from_rollouts():
    """Turn reward: 0.2 for a first turn that searched and got documents, + 0.5 when a gold
    answer is in that observation; outcome: 0.5·[gold in answer] + EM + format."""
    gold = ["Paris"]
    hit = _rollout([[0, 2], [5, 7]], ["q"], [["d"]], golds=gold, answer="Paris",
                   text="<search>q</search><information>Paris, France</information><answer>Paris</answer>")
    miss = _rollout([[0, 2], [5, 7]], ["q"], [["d"]], golds=gold, answer="the city of Paris",
                    text="<search>q</search><information>Lyon</information><answer>…</answer>")
    direct = _rollout([[0, 7]], [], [], golds=gold, answer="Rome", fmt=False, text="<answer>Rome</answer>")
    mask = torch.ones(3, 7)
    batch = EstimatorBatch(torch.zeros(3), mask, [0, 0, 0], [hit, miss, direct], CalibConfig())
    adv, stats = estimate("mt_grpo", {"eps": 0.0}, batch)
    want, _ = mt_grpo_advantage([0.7, 0.2, 0.0], [2.5, 1.5, 0.0], [True, True, False], [2, 2, 7],
                                mask, [0, 0, 0], eps=0.0)
    assert torch.allclose(adv, want)
    assert stats["mt_turn_reward_mean"] == pytest.approx(0.3)


def test_mt_grpo_matches_answers_as_the_official_rubric():
    """Official: SiliangZeng/Multi-Turn-RL-Agent@7dbdd08bdb27 verifiers/rubrics/triviaqa_rubric.py
    L23-61 (0.5 when a gold, lower-cased, is a substring of the lower-cased answer), L63-85
    (EM: lower + strip equality), L114-148 (0.5 when a gold is a substring of the first search
    result). Gold "The Beatles"; every rollout searched (turn reward 0.2 + 0.5·[gold in it]):

    | first result              | answer          | R_T | in answer | EM | format | R_O |
    | "Members of Beatles: ..." | "Beatles"       | 0.2 | 0         | 0  | 1      | 1.0 |
    | "The Beatles were a band" | "the beatles."  | 0.7 | 0.5       | 0  | 1      | 1.5 |
    | "nothing"                 | " THE BEATLES " | 0.2 | 0.5       | 1  | 1      | 2.5 |

    SQuAD normalisation (``matching: squad``) would give R_T [0.7, 0.7, 0.2], R_O 2.5 each."""
    gold = ["The Beatles"]

    def searched(result, answer):
        return _rollout([[0, 2], [5, 7]], ["q"], [["d"]], golds=gold, answer=answer,
                        text=f"<search>q</search><information>{result}</information><answer>{answer}</answer>")

    rollouts = [searched("Members of Beatles: John", "Beatles"),
                searched("The Beatles were a band", "the beatles."),
                searched("nothing", " THE BEATLES ")]
    mask = torch.ones(3, 7)
    batch = EstimatorBatch(torch.zeros(3), mask, [0, 0, 0], rollouts, CalibConfig())
    adv, _ = estimate("mt_grpo", {}, batch)
    want, _ = mt_grpo_advantage([0.2, 0.7, 0.2], [1.0, 1.5, 2.5], [True] * 3, [2] * 3, mask,
                                [0, 0, 0], eps=1e-4)
    assert torch.allclose(adv, want)
    squad, _ = estimate("mt_grpo", {"matching": "squad"}, batch)
    want_squad, _ = mt_grpo_advantage([0.7, 0.7, 0.2], [2.5, 2.5, 2.5], [True] * 3, [2] * 3,
                                      mask, [0, 0, 0], eps=1e-4)
    assert torch.allclose(squad, want_squad)


# --------------------------------------------------------------------------- Tree-GRPO
def test_tree_grpo_by_hand():
    """One prompt, two trees of three leaves, R = [1, 0, 0 | 1, 1, 0]:
    prompt z = ±0.91287; tree 0 z = [2/√3, -1/√3, -1/√3]; tree 1 z = [1/√3, 1/√3, -2/√3]."""
    p = 0.9128709
    adv, _ = tree_grpo_advantage(torch.tensor([1.0, 0, 0, 1, 1, 0]), torch.ones(6, 1), [0] * 6,
                                 [0, 0, 0, 1, 1, 1], eps=0.0)
    want = [p + 2 / R3, -p - 1 / R3, -p - 1 / R3, p + 1 / R3, p + 1 / R3, -p - 2 / R3]
    assert adv[:, 0].tolist() == pytest.approx(want, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=6))
def test_tree_grpo_one_tree_of_one_leaf_per_prompt(rewards):
    """Both groups are singletons (mean 0, std 1): A = R + R."""
    scores = torch.tensor(rewards, dtype=torch.float32)
    n = len(rewards)
    adv, _ = tree_grpo_advantage(scores, torch.ones(n, 2), list(range(n)), [0] * n)
    assert torch.equal(adv, 2 * grpo_advantage(scores, torch.ones(n, 2), list(range(n))))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(-1, 1, width=32)), min_size=1, max_size=9))
def test_tree_grpo_with_one_tree_per_prompt_is_twice_grpo(rows):
    scores = torch.tensor([r for _, r in rows], dtype=torch.float32)
    groups = [g for g, _ in rows]
    mask = torch.ones(len(rows), 3)
    adv, _ = tree_grpo_advantage(scores, mask, groups, [0] * len(rows))
    assert torch.equal(adv, 2 * grpo_advantage(scores, mask, groups))


def test_tree_grpo_needs_tree_rollouts():
    with pytest.raises(ConfigError, match="needs tree rollouts"):
        estimate("tree_grpo", None, _batch())
