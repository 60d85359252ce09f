"""``StepJudge``: which steps a training batch sends to the judge, and the silver fallback."""

from __future__ import annotations

import torch
from dumps import rollout

from calibadv.methods.advantage import CalibConfig, calibrate
from calibadv.judge.client import JudgeClient, JudgeSettings
import pytest

from calibadv.train.judge_scoring import JudgeFallbackError, StepJudge

CFG = CalibConfig(score="judge")


def batch():
    """Two groups of two rollouts; group 0 has a correct rollout (silver {g1}), group 1 none."""
    rows = [
        rollout("yes q0", [("a", ["g1"], None)]),                        # correct
        rollout("half q0", [("b", ["g1", "x"], None), ("", [], None)]),  # wrong: judged
        rollout("no q1", [("c", ["y"], None)]),                          # wrong, but A = 0
        rollout("no q1", [("d", ["z"], None)]),
    ]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    ok = torch.tensor([True, True, True, True])
    mask = torch.ones(4, 40)
    return rows, rewards, ok, mask, [0, 0, 1, 1]


def client(proxy, judge_server, **kw):
    return JudgeClient(JudgeSettings(base_url=proxy.url, model=judge_server[1], backoff_s=0.0,
                                     max_retries=1, **kw))


def test_only_searched_steps_of_negative_rollouts_are_judged(proxy, judge_server):
    rows, rewards, ok, mask, groups = batch()
    scores, m = StepJudge(client(proxy, judge_server)).score(rows, rewards, ok, mask, groups, CFG)
    # rollout 1 is the only negative one; its second step searched nothing (c = 0, no call)
    assert scores == [None, [0.5, 0.0], None, None]
    assert m["judge_steps"] == 1 and m["judge_requests"] == 1 and m["judge_fallback"] == 0
    assert proxy.chat_requests == 1 and "half q0" in proxy.bodies[0]["messages"][1]["content"]
    _, stats = calibrate(rewards, ok, mask, groups, [r["turn_spans"] for r in rows],
                         [r["doc_ids"] for r in rows], [r["thinks"] for r in rows], CFG,
                         judge_scores=scores)
    assert stats["per_step_c"] == [None, [0.5, 0.0], None, None]


def test_a_step_without_a_verdict_falls_back_to_its_silver_score_and_is_counted(proxy, judge_server):
    rows, rewards, ok, mask, groups = batch()
    proxy.faults = [("status", 500), ("status", 500)]
    judge = StepJudge(client(proxy, judge_server), max_fallback_frac=1.0)
    scores, m = judge.score(rows, rewards, ok, mask, groups, CFG)
    # official silver score of step 0: 1 of its 2 documents is silver ({g1})
    assert scores[1] == [0.5, 0.0]
    assert m["judge_fallback"] == 1 and m["judge_failed"] == 1 and m["judge_retries"] == 1


def test_an_unparsable_verdict_also_falls_back(proxy, judge_server):
    rows, rewards, ok, mask, groups = batch()
    rows[1]["question"] = "junk q0"
    judge = StepJudge(client(proxy, judge_server), max_fallback_frac=1.0)
    scores, m = judge.score(rows, rewards, ok, mask, groups, CFG)
    assert scores[1] == [0.5, 0.0] and m["judge_unparsable"] == 1 and m["judge_fallback"] == 1


def test_groups_without_a_silver_set_are_judged_too(proxy, judge_server):
    rows, _, ok, mask, groups = batch()
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])  # group 1: nothing reaches tau = 0.7
    scores, m = StepJudge(client(proxy, judge_server)).score(rows, rewards, ok, mask, groups, CFG)
    assert scores[3] == [0.0]  # "no q1" → VERDICT: 0, judged although the silver set is empty
    assert m["judge_steps"] == 2


def test_more_fallbacks_than_the_cap_fail_the_step(proxy, judge_server):
    """Defect 3: a "judge-scored" step must not quietly be a silver one (default cap 5 %)."""
    rows, rewards, ok, mask, groups = batch()
    proxy.faults = [("status", 500), ("status", 500)]
    with pytest.raises(JudgeFallbackError, match=r"1 of 1 judged steps \(100%\).*max_fallback_frac = 0.05"):
        StepJudge(client(proxy, judge_server)).score(rows, rewards, ok, mask, groups, CFG)


def test_the_cap_reaches_the_trainer_from_the_run_spec():
    from calibadv.judge.config import JudgeConfig

    assert JudgeConfig(base_url="http://x/v1").max_fallback_frac == 0.05
    assert JudgeConfig.from_dict({"base_url": "http://x/v1", "max_fallback_frac": 0.2}).max_fallback_frac == 0.2
