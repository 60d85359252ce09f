"""A real tiny run on CPU: SFT start point → RL steps (calibadv, search-r1) → evaluation;
deterministic under a seed; kill-and-resume gives the same steps as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from calibadv.io import read_jsonl
from calibadv.methods.presets import get_method

from .conftest import cli

pytestmark = pytest.mark.slow

DESIGN_SIGNALS = {
    "step", "epoch", "time_s", "empty_silver_frac", "softpen_frac", "penalised_c1_frac",
    "c_mean", "c_hist", "negpos_ratio_before", "negpos_ratio_after", "num_scored_steps",
    "reward_mean", "f1_mean", "em_mean", "format_rate", "entropy", "token_prob_mean",
    "ppl_mean", "high_ppl_ratio", "valid_searches_mean", "response_len_mean", "loss",
    "pg_clipfrac", "grad_norm", "lr",
}


def write_spec(path: Path, world: dict, server: str, method: str, steps: int, **training) -> Path:
    spec = {
        "name": f"tiny-{method}",
        "backend": "local",
        "seed": 0,
        "model": {"path": str(world["sft"]), "name": "tiny"},
        "method": get_method(method),
        "data": {"train": str(world["train"]), "val": str(world["dev"]), "val_size": 4},
        "retrieval": {"url": server, "topk": 3},
        "agent": {"max_turns": 2, "max_tokens_per_turn": 24, "max_response_tokens": 200},
        "training": {"steps": steps, "batch_size": 2, "group_size": 3, "mini_batch_size": 1,
                     "micro_batch_size": 3, "lr": 1e-4, "save_every": 2, "val_every": 2,
                     "dump_rollouts_at": [1], **training},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sft_start_point_report(world):
    report = json.loads((world["sft"] / "sft_report.json").read_text())
    assert report["demonstrations"] == 64 and report["eval_n"] == 8
    assert report["loss_last"] < report["loss_first"]
    assert 0.0 <= report["format_rate"] <= 1.0 and 0.0 <= report["f1"] <= 1.0
    # measured in both prompt formats; the top-level numbers are those of the trained (plain) one
    points = report["start_point"]
    assert set(points) == {"plain", "prethink"} and points["prethink"]["eval_n"] == 8
    assert {k: report[k] for k in points["plain"]} == points["plain"]


@pytest.mark.parametrize("method", ["calibadv", "search-r1"])
def test_rl_run_writes_every_output_and_evaluates(world, server, tmp_path, method):
    spec = write_spec(tmp_path / "spec.yaml", world, server, method, steps=2)
    out = tmp_path / "run"
    cli("train", "--spec", spec, "--out", out)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert DESIGN_SIGNALS <= set(metrics[0])
    assert [v["step"] for v in read_jsonl(out / "val.jsonl")] == [0, 2]
    dump = read_jsonl(out / "rollouts" / "step_000001.jsonl")
    assert len(dump) == 6 and {"group", "c", "silver_ids", "advantage"} <= set(dump[0])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["sft"])
    prethink = get_method(method)["prethink"]
    # PreThink moves the opening <think> into the prompt (it carries no advantage)
    assert all(tok.decode(d["prompt_ids"]).endswith("<think>") == prethink for d in dump)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000002"
    selection = json.loads((out / "selection.json").read_text())
    assert selection["step"] == 2 and (out / "final" / "config.json").exists()
    assert json.loads((out / "done.json").read_text())["backend"] == "local"

    ev = tmp_path / "eval"
    cli("evaluate", "--spec", spec, "--checkpoint", out / "final", "--data", world["dev"],
        "--benchmark", "hotpotqa", "--out-dir", ev)
    m = json.loads((ev / "metrics.json").read_text())
    assert m["n"] == 8 and m["step"] == 2 and m["method"] == method
    assert len(read_jsonl(ev / "predictions.jsonl")) == 8  # no dropped tail


def test_resume_after_stop_equals_uninterrupted_run(world, server, tmp_path):
    straight = tmp_path / "straight"
    cli("train", "--spec", write_spec(tmp_path / "s4.yaml", world, server, "calibadv", 4),
        "--out", straight)
    resumed = tmp_path / "resumed"
    cli("train", "--spec", write_spec(tmp_path / "s2.yaml", world, server, "calibadv", 2),
        "--out", resumed)
    # a step logged after the last checkpoint (as if killed before saving) is redone
    extra = read_jsonl(resumed / "metrics.jsonl")[-1] | {"step": 3}
    with open(resumed / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(extra) + "\n")
    cli("train", "--spec", write_spec(tmp_path / "s4b.yaml", world, server, "calibadv", 4),
        "--out", resumed)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]

    assert strip(read_jsonl(resumed / "metrics.jsonl")) == strip(read_jsonl(straight / "metrics.jsonl"))
    assert read_jsonl(resumed / "val.jsonl") == read_jsonl(straight / "val.jsonl")
    import torch
    from safetensors.torch import load_file

    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_several_suites_in_one_call_equal_one_call_each(world, server, tmp_path):
    """`--suite` loads the model and the server once; every benchmark's files are the same
    as a call of its own would write."""
    spec = write_spec(tmp_path / "spec.yaml", world, server, "calibadv", steps=1)
    cli("evaluate", "--spec", spec, "--checkpoint", world["sft"], "--out-dir", tmp_path / "both",
        "--suite", f"hotpotqa={world['dev']}", "--suite", f"musique={world['dev']}", "--limit", "4")
    cli("evaluate", "--spec", spec, "--checkpoint", world["sft"], "--out-dir", tmp_path / "one",
        "--data", world["dev"], "--benchmark", "musique", "--limit", "4")
    both = tmp_path / "both"
    assert json.loads((both / "hotpotqa" / "metrics.json").read_text())["benchmark"] == "hotpotqa"
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert json.loads((both / "musique" / "metrics.json").read_text()) == one
    assert read_jsonl(both / "musique" / "predictions.jsonl") == read_jsonl(
        tmp_path / "one" / "predictions.jsonl"
    )


def test_a_micro_batch_larger_than_a_mini_batch_trains(world, server, tmp_path):
    """micro_batch_size 4 over mini-batches of 3 rollouts (1 question × G = 3): the old
    log-probs are cut on the loss's own micro-batches, so the two line up (they used not to:
    old log-probs were chunked over the whole batch and the loss failed on mismatched rows)."""
    out = tmp_path / "run"
    cli("train", "--spec", write_spec(tmp_path / "s.yaml", world, server, "calibadv", 1,
                                      micro_batch_size=4, val_before_train=False), "--out", out)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1]
