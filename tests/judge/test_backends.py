"""The judge reaches both training backends: verl's calibadv estimator (driver process) scores
steps through the endpoint the launcher hands over as hydra overrides."""

from __future__ import annotations

import json

import torch
from dumps import rollout

from calibadv.cli import main
from calibadv.train.judge_scoring import dry_run_judge_overrides, verl_judge_overrides
from calibadv.methods.presets import get_method
from calibadv.train.verl.estimator import compute_calibadv_advantage, rollout_context


def test_the_verl_estimator_scores_negative_rollouts_with_the_judge(proxy, judge_server):
    rows = [rollout("yes q", [("a", ["g1"], None)]), rollout("half q", [("b", ["x"], None)])]
    extras = [{**r, "format_ok": True} for r in rows]
    rewards = torch.zeros(2, 30)
    rewards[0, 5] = 1.0
    mask = torch.ones(2, 30)
    config = {"calibadv": {"calibration": {"score": "judge"},
                           "judge": {"server": "external", "base_url": proxy.url,
                                     "model": judge_server[1], "concurrency": 2}}}
    with rollout_context(extras) as ctx:
        adv, _ = compute_calibadv_advantage(rewards, mask, index=["u", "u"], config=config)
    assert ctx.stats["per_step_c"] == [None, [0.5]]  # "half" → VERDICT: 0.5
    assert ctx.stats["judge_steps"] == 1 and ctx.stats["judge_fallback"] == 0
    assert proxy.chat_requests == 1
    # the soft penalty halves the negative rollout's step advantage: A·(1 − 0.5)
    step = slice(*rows[1]["turn_spans"][0])
    answer = slice(*rows[1]["turn_spans"][1])
    assert torch.allclose(adv[1, step], 0.5 * adv[1, answer])


def test_the_launcher_hands_the_endpoint_to_verl_as_overrides():
    method = get_method("calibadv-judge")
    judge = {"server": "external", "base_url": "https://api.example.com/v1", "model": "m",
             "api_key_env": "KEY_VAR", "price": {"input_per_mtok": 0.5},
             "cache": "results/real/judge/cache.sqlite"}
    with verl_judge_overrides(method, judge) as overrides:
        cache = next(o for o in overrides if ".judge.cache=" in o)
        assert cache.split("=", 1)[1].endswith("/results/real/judge/cache.sqlite")
        assert cache.split("=", 1)[1].startswith("/")  # verl runs in the run directory
        assert "+algorithm.calibadv.judge.base_url=https://api.example.com/v1" in overrides
        assert "+algorithm.calibadv.judge.api_key_env=KEY_VAR" in overrides
        assert "+algorithm.calibadv.judge.price.input_per_mtok=0.5" in overrides
    with verl_judge_overrides(get_method("calibadv"), None) as overrides:
        assert overrides == []
    shown = dry_run_judge_overrides(method, {"server": "local", "model": "/models/judge"})
    assert any("<local judge server>" in o for o in shown)


def test_judge_ask_prints_one_verdict(proxy, judge_server, capsys):
    judge = {"server": "external", "base_url": proxy.url, "model": judge_server[1]}
    assert main(["judge", "ask", "--judge-json", json.dumps(judge), "--question", "no who?",
                 "--query", "who", "--answer", "Ann"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"]["verdict"] == 0.0 and out["accounting"]["requests"] == 1


def test_bad_judge_json_is_a_clear_error(capsys):
    assert main(["judge", "ask", "--judge-json", "{not json", "--question", "q", "--query", "q"]) == 2
    assert "--judge-json is not valid JSON" in capsys.readouterr().err
    assert main(["judge", "ask", "--judge-json", '{"server": "external"}', "--question", "q",
                 "--query", "q"]) == 2
    assert "judge.base_url" in capsys.readouterr().err
