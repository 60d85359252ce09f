"""``calibration.score: judge`` in the local backend: two real RL steps whose step scores come
from a judge server the training job starts itself (``judge.server: local``: a real
``transformers serve`` on the tests' tiny bigram judge model, tests/judge/bigram_model.py).

The session's SFT start point is too weak to search reliably, so generation is scripted with
the generator interface the trainer calls (requests → token ids, log-probs, text): every
rollout searches its question once, then answers — correctly for every other rollout, so
groups hold negative rollouts with a searched step, which is what the judge scores. The rest
is the real pipeline: agent protocol, retrieval server, reward, calibrate, policy loss.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import yaml

from calibadv.io import read_jsonl
from calibadv.methods.presets import get_method

from .conftest import cli

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "judge"))
from bigram_model import build_bigram_judge  # noqa: E402


class ScriptedPolicy:
    """Stands in for ``HFGenerator`` (same call): search the question, then answer it."""

    def __init__(self, model, tok, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False) -> None:
        from calibadv.data.questions import load_questions

        self.tok = tok
        self.golden = {q.question: q.golden_answers for q in load_questions(_TRAIN[0])}
        self.turn = itertools.count()
        self.base: dict[str, int] = {}

    def __call__(self, requests):
        from calibadv.agent.types import Generation

        out = []
        for r in requests:
            prompt = self.tok.decode(r.prompt_ids)
            question = next(q for q in self.golden if q in prompt)
            # the instructions mention </search> too: count the ones the response added
            searches = prompt.count("</search>") - self.base.setdefault(question, prompt.count("</search>"))
            if searches == 0:
                text = f"look it up</think><search>{question}</search>"
            else:
                right = next(self.turn) % 2 == 0
                text = f"done</think><answer>{self.golden[question][0] if right else 'Nobody'}</answer>"
            ids = self.tok(text, add_special_tokens=False).input_ids
            out.append(Generation(token_ids=ids, logprobs=[-0.5] * len(ids), text=text,
                                  finish_reason="stop"))
        return out


_TRAIN: list[str] = []


def test_two_judge_scored_steps_with_a_local_judge_server(world, server, tmp_path, monkeypatch):
    import calibadv.agent.hf as hf

    _TRAIN[:] = [str(world["train"])]
    monkeypatch.setattr(hf, "HFGenerator", ScriptedPolicy)
    judge_dir = build_bigram_judge(tmp_path / "judge-model")
    spec = {
        "name": "tiny-calibadv-judge", "backend": "local", "seed": 0,
        "model": {"path": str(world["sft"]), "name": "tiny"},
        "method": get_method("calibadv-judge"),
        "data": {"train": str(world["train"]), "val": None},
        "retrieval": {"url": server, "topk": 3},
        # the hf engine: the one the scripted policy stands in for (the default is kv)
        "agent": {"max_turns": 2, "max_tokens_per_turn": 64, "max_response_tokens": 400,
                  "generator": "hf"},
        "training": {"steps": 2, "batch_size": 2, "group_size": 3, "mini_batch_size": 1,
                     "micro_batch_size": 3, "lr": 1e-4, "save_every": 2,
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
    judged = requests = 0
    for step, m in zip((1, 2), metrics, strict=True):
        assert m["judge_time_s"] > 0.0 and m["judge_fallback"] == 0 and m["judge_failed"] == 0
        assert m["judge_requests"] + m["judge_cache_hits"] + m["judge_duplicates"] == m["judge_steps"]
        rows = read_jsonl(out / "rollouts" / f"step_{step:06d}.jsonl")
        negative = [r for r in rows if r["advantage"] < 0]
        assert negative, "the script answers every other rollout wrongly"
        # one judge call per searched step of a negative rollout; the test judge says 1
        assert m["judge_steps"] == sum(len(r["doc_ids"]) for r in negative)
        for r in rows:
            assert r["c"] == ([1.0] * len(r["doc_ids"]) if r["advantage"] < 0 else None)
        judged += m["judge_steps"]
        requests += m["judge_requests"]
    assert judged > 0
    log = (out / "judge_server.log").read_text()
    assert log.count("POST /v1/chat/completions") == requests  # the server saw every call
    assert "Finished server process" in log  # stopped when the run ended
