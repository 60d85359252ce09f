"""Read the workflow's result files into plain structures; a missing file is a missing value."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calibadv.io import read_jsonl
from calibadv.workflow.judge import judge_runs
from calibadv.workflow.layout import Layout
from calibadv.workflow.runs import model_seeds, seed_runs, start_point_runs


@dataclass
class RunResult:
    """What one (model, method, seed) training run left behind."""

    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    val: list[dict[str, Any]] = field(default_factory=list)  # val.jsonl
    done: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None


@dataclass
class Results:
    evals: dict[tuple[str, str, int, str], dict[str, Any]]  # (model, method, seed, bench) -> metrics
    runs: dict[tuple[str, str, int], RunResult]  # (model, method, seed)
    proxy: dict[tuple[str, str, int], dict[str, Any]]
    train_counts: dict[str, int]  # data_source -> training questions
    test_counts: dict[str, int]  # benchmark -> evaluated questions
    judge: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)  # summary.json
    # (start model, bench) -> metrics of the start point with no RL (evaluation.start_point)
    start_evals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (model, method, seed, bench) -> {question id: {metric: value}} from predictions.jsonl,
    # for the question-level intervals (calibadv.report.questions); absent for an evaluation
    # without the file
    questions: dict[tuple[str, str, int, str], dict[str, dict[str, float]]] = field(default_factory=dict)
    # (start model, bench) -> the same of the start point's evaluation (Table 1's first row)
    start_questions: dict[tuple[str, str], dict[str, dict[str, float]]] = field(default_factory=dict)

    def seeds(self, model: str, method: str) -> list[int]:
        """The seeds of (model, method) that left a run folder behind (or were configured)."""
        return sorted(s for m, x, s in self.runs if (m, x) == (model, method))


def _json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else []


def _parquet_counts(path: Path, column: str | None = None) -> dict[str, int] | int | None:
    if not path.exists():
        return None
    import pandas as pd

    frame = pd.read_parquet(path, columns=[column] if column else None)
    if column is None:
        return len(frame)
    return {str(k): int(v) for k, v in frame[column].value_counts().items()}


def _questions(path: Path) -> dict[str, dict[str, float]] | None:
    """``{question id: {f1, em, format_rate, high_ppl_ratio}}`` of one ``predictions.jsonl``
    (each a 0/1 indicator but F1), so a table can resample questions; None when it is missing.
    Only the numbers are kept: the answers' text is not needed for an interval."""
    if not path.exists():
        return None
    from calibadv.evaluate.metrics import HIGH_PPL_THRESHOLD

    out = {}
    for rec in read_jsonl(path):
        ok = bool(rec.get("format_ok"))
        out[str(rec["id"])] = {
            "f1": float(rec.get("f1") or 0.0),
            "em": float(rec.get("em") or 0.0),
            "format_rate": float(ok),
            "high_ppl_ratio": float(float(rec.get("ppl") or 1.0) >= HIGH_PPL_THRESHOLD),
        }
    return out


def collect(config: dict[str, Any]) -> Results:
    """Everything the tables and figures need, for the runs the config names."""
    layout = Layout.of(config)
    evals, runs, proxy, questions = {}, {}, {}, {}
    for model, method, seed in seed_runs(config):
        run_dir = Path(layout.run_dir(model, method, seed))
        runs[(model, method, seed)] = RunResult(
            metrics=_jsonl(run_dir / "metrics.jsonl"),
            val=_jsonl(run_dir / "val.jsonl"),
            done=_json(run_dir / "done.json"),
            selection=_json(run_dir / "selection.json"),
        )
        for bench in config["benchmarks"]:
            found = _json(Path(layout.eval_dir(model, method, seed, bench)) / "metrics.json")
            if found is not None:
                evals[(model, method, seed, bench)] = found
            preds = _questions(Path(layout.eval_dir(model, method, seed, bench)) / "predictions.jsonl")
            if preds:
                questions[(model, method, seed, bench)] = preds
        stats = _json(Path(layout.proxy(model, method, seed)))
        if stats is not None:
            proxy[(model, method, seed)] = stats
    train = _parquet_counts(Path(layout.train_data), "data_source") or {}
    tests = {}
    for bench in config["benchmarks"]:
        n = _parquet_counts(Path(layout.test_data(bench)))
        if n is not None:
            tests[bench] = n
    judge = {}
    for model, method in judge_runs(config):
        for seed in model_seeds(config, model):
            found = _json(Path(layout.judge_dir(model, method, seed)) / "summary.json")
            if found is not None:
                judge[(model, method, seed)] = found
    start_evals, start_questions = {}, {}
    for model in start_point_runs(config):
        for bench in config["benchmarks"]:
            where = Path(layout.start_eval_dir(model, bench))
            found = _json(where / "metrics.json")
            if found is not None:
                start_evals[(model, bench)] = found
            preds = _questions(where / "predictions.jsonl")
            if preds:
                start_questions[(model, bench)] = preds
    return Results(evals, runs, proxy, train, tests, judge, start_evals, questions, start_questions)


def load_paper(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)
