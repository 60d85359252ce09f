"""``calibration.score: judge`` in the local backend: two real RL steps whose step scores come
from a judge server the training job starts itself (``judge.server: local``,
``transformers serve`` on the tests' tiny bigram judge model, tests/judge/bigram_model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from calibadv.io import read_jsonl
from calibadv.methods import get_method

from .conftest import cli

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
from bigram_model import build_bigram_judge  # noqa: E402


def test_two_judge_scored_steps_with_a_local_judge_server(world, server, tmp_path):
    judge_dir = build_bigram_judge(tmp_path / "judge-model")
    spec = {
        "name": "tiny-calibadv-judge", "backend": "local", "seed": 0,
        "model": {"path": str(world["sft"]), "name": "tiny"},
        "method": get_method("calibadv-judge"),
        "data": {"train": str(world["train"]), "val": None},
        "retrieval": {"url": server, "topk": 3},
        "agent": {"max_turns": 2, "max_tokens_per_turn": 24, "max_response_tokens": 200},
        "training": {"steps": 2, "batch_size": 4, "group_size": 3, "mini_batch_size": 2,
                     "micro_batch_size": 6, "lr": 1e-4, "save_every": 2,
                     "val_before_train": False, "dump_rollouts_at": [1, 2]},
        "judge": {"server": "local", "engine": "transformers", "model": str(judge_dir),
                  "threads": 1, "concurrency": 2, "cache": str(tmp_path / "cache.sqlite")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    cli("train", "--spec", path, "--out", out)

    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["judge_time_s"] >= 0.0 and m["judge_fallback"] == 0
        assert m["judge_requests"] + m["judge_cache_hits"] == m["judge_steps"]
    assert sum(m["judge_steps"] for m in metrics) > 0, "no negative rollout searched: nothing judged"
    # the test judge answers VERDICT: 1 to these questions: every judged step has c = 1,
    # rollouts that are not negative are left unscored
    for step in (1, 2):
        for row in read_jsonl(out / "rollouts" / f"step_{step:06d}.jsonl"):
            if row["advantage"] < 0 and row["c"] is not None:
                searched = [c for c, q in zip(row["c"], row["queries"]) if q]
                assert all(c == 1.0 for c in searched)
            if row["advantage"] >= 0:
                assert row["c"] is None
    log = (out / "judge_server.log").read_text()
    assert "POST /v1/chat/completions" in log and "Finished server process" in log
