"""Our numbers behind the tables: ×100 scores per seed and benchmark, their aggregate over
seeds (t-interval, question bootstrap, or Wilson's interval for a share), paired effects
between methods, and the collapse steps of the runs. See docs/synthetic-study.md for the
statistics (calibadv.report.stats, calibadv.report.questions).
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from calibadv.report.blocks import BENCHMARKS, Cell, diff
from calibadv.report.collect import Results
from calibadv.report.questions import (
    SHARE_METRICS,
    effect_cells,
    has_questions,
    level_cells,
    share_cells,
)
from calibadv.report.stats import Interval, effect_or_structural_zero, t_interval


def bench_scores(metrics: dict[str, dict[str, Any] | None], metric: str = "f1",
                 counts: dict[str, int] | None = None) -> dict[str, float]:
    """×100 scores of one evaluation: benchmark -> score, plus ``average`` when all seven
    benchmarks have one (an average over fewer would not compare) and ``pooled``, the mean over
    every test question (each split weighted by its questions: metrics.json's ``n``, else
    ``counts``), when every split's size is known."""
    out = {b: 100.0 * float(m[metric]) for b, _ in BENCHMARKS
           if (m := metrics.get(b)) is not None and m.get(metric) is not None}  # fmt: skip
    if len(out) == len(BENCHMARKS):
        out["average"] = mean(out.values())
        sizes = {b: (metrics[b] or {}).get("n") or (counts or {}).get(b) for b, _ in BENCHMARKS}
        if all(sizes.values()):
            out["pooled"] = sum(out[b] * sizes[b] for b in sizes) / sum(sizes.values())
    return out


def seed_scores(
    results: Results, model: str, method: str, metric: str = "f1"
) -> dict[str, dict[int, float]]:
    """×100 scores: benchmark -> {seed: score}, plus ``average`` for every seed evaluated on
    all seven benchmarks (so each seed's average is over the same benchmarks)."""
    out: dict[str, dict[int, float]] = {}
    for seed in results.seeds(model, method):
        found = {b: results.evals.get((model, method, seed, b)) for b, _ in BENCHMARKS}
        for key, score in bench_scores(found, metric, results.test_counts).items():
            out.setdefault(key, {})[seed] = score
    return out


def aggregate(per_seed: dict[str, dict[int, float]]) -> dict[str, Cell]:
    """key -> mean and 95% t-interval over seeds."""
    return {k: t_interval(list(v.values())) for k, v in per_seed.items()}


def our_scores(results: Results, model: str, method: str, metric: str = "f1") -> dict[str, Cell]:
    """×100 scores per benchmark (average, pooled), aggregated over the seeds: mean ± t over
    seeds; at one seed the question bootstrap where the predictions are there (rather than no
    interval); a share (:data:`SHARE_METRICS`) as Wilson's interval of the questions pooled
    over seeds, never a t-interval."""
    keys = [b for b, _ in BENCHMARKS]
    if metric in SHARE_METRICS:
        return dict(share_cells(results, model, method, metric, keys))
    cells = aggregate(seed_scores(results, model, method, metric))
    if any(isinstance(v, Interval) and v.half is None for v in cells.values()) and \
            has_questions(results, model, method):
        boot = level_cells(results, model, method, metric, keys)
        cells = {k: boot.get(k, v) if isinstance(v, Interval) and v.half is None else v
                 for k, v in cells.items()}  # fmt: skip
    return cells


def effects(
    results: Results, model: str, method: str, reference: str, metric: str = "f1"
) -> dict[str, Cell]:
    """Paired effect ``method − reference`` per benchmark (average, pooled): the two-level
    bootstrap over seeds and questions where both methods left per-question results
    (:func:`calibadv.report.questions.effect_cells`), else the t-interval of the per-seed
    differences over the shared seeds."""
    if has_questions(results, model, method) and has_questions(results, model, reference):
        return dict(effect_cells(results, model, method, reference, metric,
                                 [b for b, _ in BENCHMARKS]))
    ours = seed_scores(results, model, method, metric)
    ref = seed_scores(results, model, reference, metric)
    return {k: effect_or_structural_zero(ours[k], ref[k]) for k in ours if k in ref}


def paper_effects(paper: dict[str, Any], reference: dict[str, Any], keys: list[str]) -> dict[str, Cell]:
    return {k: diff(paper.get(k), reference.get(k)) for k in keys}


def collapse_steps(results: Results, model: str, method: str) -> dict[int, int | None]:
    """seed -> collapse step (None: no collapse) of the runs that finished."""
    out = {}
    for seed in results.seeds(model, method):
        run = results.runs[(model, method, seed)]
        if run.selection is not None:
            out[seed] = run.selection.get("collapse_step")
    return out


def collapse_label(results: Results, model: str, method: str) -> str | None:
    """``none`` (one seed, no collapse), ``4/6`` (one seed: step / total steps), or over seeds
    ``0/3 collapsed`` / ``2/3 collapsed: 4, 5 of 6``."""
    steps = collapse_steps(results, model, method)
    if not steps:
        return None
    totals = {(results.runs[(model, method, s)].done or {}).get("steps") for s in steps}
    total = next(iter(totals)) if len(totals) == 1 else None
    collapsed = sorted(v for v in steps.values() if v is not None)
    if len(steps) == 1:
        if not collapsed:
            return "none"
        return f"{collapsed[0]}/{total}" if total is not None else str(collapsed[0])
    text = f"{len(collapsed)}/{len(steps)} collapsed"
    if collapsed:
        text += ": " + ", ".join(map(str, collapsed)) + (f" of {total}" if total is not None else "")
    return text
