"""Question-level intervals of the F1 tables (Tables 1–4): what a seed's test questions add.

A t-interval over seeds leaves out the test questions drawn: with 660 questions a split's F1
moves by about a point from the draw alone, and at one seed there is no interval at all. Here,
from each evaluation's ``predictions.jsonl`` (collected as ``Results.questions``):

- an *effect* (method − reference) is the two-level bootstrap of the per-question paired
  differences (:func:`calibadv.evaluate.intervals.split_bootstrap`: seeds, then questions
  within each split of each drawn seed; the question is the same in both runs of a seed);
- a *level* at one seed is the question bootstrap of that seed (so is the start point's, one
  evaluation with no seeds: :func:`start_point_cells`);
- an effect with nothing per question (Table 9's validation F1 and last-step shares, one number
  per run) is the *seed* bootstrap of the per-seed paired differences (:func:`seed_effect`);
- a *share* (High-PPL, format, EM) is a count: Wilson's interval of the questions pooled over
  seeds (inside [0, 100]; never a t-interval);
- :func:`holm_mark` adjusts a table's family of effects (the split average of every effect row)
  with Holm's step-down method and marks the survivors ``†``.

All values are ×100. A cell nothing measured is absent (the table prints "—").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from calibadv.evaluate.intervals import holm, split_bootstrap
from calibadv.report.collect import Results
from calibadv.report.stats import Bounds
from calibadv.shares import wilson

#: metrics whose per-question value is 0 or 1: their level is a share (Wilson), never a t-interval
SHARE_METRICS = {"high_ppl_ratio", "format_rate", "em"}
AVERAGE, POOLED = "average", "pooled"


def has_questions(results: Results, model: str, method: str) -> bool:
    """Every evaluation of (model, method) left its per-question results (else the tables fall
    back to intervals over seeds for that method, and say so)."""
    evals = [k for k in results.evals if k[:2] == (model, method)]
    return bool(evals) and all(k in results.questions for k in evals)


def per_question(results: Results, model: str, method: str, metric: str,
                 benches: Sequence[str]) -> dict[int, dict[str, dict[str, float]]]:
    """seed -> split -> {question id: value ×100} of the evaluations that have predictions."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for seed in results.seeds(model, method):
        for b in benches:
            found = results.questions.get((model, method, seed, b))
            if found:
                out.setdefault(seed, {})[b] = {q: 100.0 * v[metric] for q, v in found.items()}
    return out


def _cells(data: dict[int, dict[str, list[float]]], benches: Sequence[str]) -> dict[str, Bounds]:
    """Bootstrap cells per split, and the split average and pooled mean over the seeds that
    have every split; a split only some seeds have is resampled over those seeds alone."""
    cells: dict[str, Bounds] = {}
    full = {s: {b: d[b] for b in benches} for s, d in data.items() if all(d.get(b) for b in benches)}
    boot = split_bootstrap(full) if full else None
    if boot is not None:
        found = {**boot.splits, AVERAGE: boot.average, POOLED: boot.pooled}
        cells = {k: Bounds(v.mean, v.low, v.high, v.n_groups, p=v.p) for k, v in found.items()}
    for b in benches:
        have = {s: {b: d[b]} for s, d in data.items() if d.get(b)}
        if b not in cells and have:
            one = split_bootstrap(have).splits[b]
            cells[b] = Bounds(one.mean, one.low, one.high, one.n_groups, p=one.p)
    return cells


def level_cells(results: Results, model: str, method: str, metric: str,
                benches: Sequence[str]) -> dict[str, Bounds]:
    """A method's scores with the two-level (at one seed: question) bootstrap interval."""
    data = per_question(results, model, method, metric, benches)
    return _cells({s: {b: list(v.values()) for b, v in d.items()} for s, d in data.items()}, benches)


def start_point_cells(results: Results, start: str, metric: str,
                      benches: Sequence[str]) -> dict[str, Bounds]:
    """The start point's scores (one evaluation of the start model, no seeds) with the question
    bootstrap, like any one-seed level; empty when its predictions were not collected."""
    data = {b: [100.0 * v[metric] for v in found.values()] for b in benches
            if (found := results.start_questions.get((start, b)))}  # fmt: skip
    return _cells({0: data}, benches) if data else {}


def seed_effect(ours: Mapping[int, float], reference: Mapping[int, float]) -> Bounds | None:
    """``ours − reference`` paired by seed, for a quantity with one number per run: the seed
    bootstrap of the per-seed differences (:func:`split_bootstrap` with one value per seed,
    so only the seed level resamples), its percentile interval and two-sided p-value.

    One shared seed: the difference alone (no interval, no p: nothing to resample). None when
    no seed is shared, or for a structural zero (both methods exactly 0 on every shared seed)."""
    seeds = sorted(set(ours) & set(reference))
    if not seeds or all(float(ours[s]) == 0.0 == float(reference[s]) for s in seeds):
        return None
    diffs = {s: float(ours[s]) - float(reference[s]) for s in seeds}
    if len(seeds) == 1:
        return Bounds(diffs[seeds[0]], None, None, 1, how="seeds")
    boot = split_bootstrap({s: {"run": [d]} for s, d in diffs.items()}).average
    return Bounds(boot.mean, boot.low, boot.high, boot.n_groups, how="seeds", p=boot.p)


def effect_cells(results: Results, model: str, method: str, reference: str, metric: str,
                 benches: Sequence[str]) -> dict[str, Bounds | None]:
    """``method − reference``, paired by seed and question, with the two-level bootstrap.

    A split where both methods score exactly 0 on every question of every shared seed is a
    structural zero (None, "—"): nothing to measure, not "+0.00"; so are the average and the
    pooled mean when every split is."""
    ours = per_question(results, model, method, metric, benches)
    ref = per_question(results, model, reference, metric, benches)
    data: dict[int, dict[str, list[float]]] = {}
    zero = dict.fromkeys(benches, True)
    for s in sorted(set(ours) & set(ref)):
        for b in set(ours[s]) & set(ref[s]):
            shared = sorted(set(ours[s][b]) & set(ref[s][b]))
            if shared:
                data.setdefault(s, {})[b] = [ours[s][b][q] - ref[s][b][q] for q in shared]
                zero[b] = zero[b] and not any(ours[s][b][q] or ref[s][b][q] for q in shared)
    cells: dict[str, Bounds | None] = dict(_cells(data, benches))
    for b in benches:
        if b in cells and zero[b]:
            cells[b] = None
    if all(zero[b] for b in benches):
        cells.update({k: None for k in (AVERAGE, POOLED) if k in cells})
    return cells


def _share_counts(results: Results, model: str, method: str, metric: str, seed: int,
                  bench: str) -> tuple[int, int] | None:
    """(k, n) of a 0/1 metric on one evaluation: counted from predictions.jsonl, else from
    metrics.json's share × its ``n`` when that is a whole count; None when neither can say."""
    found = results.questions.get((model, method, seed, bench))
    if found:
        return int(round(sum(v[metric] for v in found.values()))), len(found)
    m = results.evals.get((model, method, seed, bench)) or {}
    n = m.get("n")
    if m.get(metric) is None or not n:
        return None
    k = float(m[metric]) * int(n)
    return (int(round(k)), int(n)) if abs(k - round(k)) < 1e-6 else None


def share_cells(results: Results, model: str, method: str, metric: str,
                benches: Sequence[str]) -> dict[str, Bounds]:
    """A 0/1 metric per split as the share of its questions pooled over seeds, with Wilson's
    interval (×100, inside [0, 100]); ``pooled`` the same over every split; ``average`` the
    mean of the split shares (the paper's "Avg."), which is not a count and has no interval.
    A split whose counts are unknown (an old metrics.json without ``n``) shows its mean over
    seeds with no interval."""
    cells: dict[str, Bounds] = {}
    tot_k = tot_n = 0
    for b in benches:
        seeds = [s for s in results.seeds(model, method) if (model, method, s, b) in results.evals]
        counts = [_share_counts(results, model, method, metric, s, b) for s in seeds]
        if not seeds or results.evals[(model, method, seeds[0], b)].get(metric) is None:
            continue
        if all(c is not None for c in counts):
            k, n = sum(c[0] for c in counts), sum(c[1] for c in counts)
            lo, hi = wilson(k, n) or (0.0, 1.0)
            cells[b] = Bounds(100 * k / n, 100 * lo, 100 * hi, len(seeds), how="wilson")
            tot_k, tot_n = tot_k + k, tot_n + n
        else:
            vals = [100 * float(results.evals[(model, method, s, b)][metric]) for s in seeds]
            cells[b] = Bounds(sum(vals) / len(vals), None, None, len(seeds), how="wilson")
    if all(b in cells for b in benches):
        ns = [cells[b].n for b in benches]
        cells[AVERAGE] = Bounds(sum(cells[b].mean for b in benches) / len(benches), None, None,
                                min(ns), how="wilson")
        if all(cells[b].low is not None for b in benches) and tot_n:
            lo, hi = wilson(tot_k, tot_n) or (0.0, 1.0)
            cells[POOLED] = Bounds(100 * tot_k / tot_n, 100 * lo, 100 * hi, min(ns), how="wilson")
    return cells


def holm_mark(effects: Sequence[dict[str, Any]], key: str = AVERAGE, alpha: float = 0.05) -> int:
    """Holm over a table's family: the ``key`` cell of every effect dict that has a bootstrap
    p-value. Each such cell gets its adjusted p and, when it survives at ``alpha``, the mark
    ``†`` (the dicts are updated in place). Returns the family's size (0: nothing to adjust)."""
    family = {i: e[key] for i, e in enumerate(effects)
              if isinstance(e.get(key), Bounds) and e[key].p is not None}
    if not family:
        return 0
    adjusted = holm({str(i): c.p for i, c in family.items()}, alpha)
    for i, cell in family.items():
        p_holm, survives = adjusted[str(i)]
        effects[i][key] = dataclasses.replace(cell, p_holm=p_holm, mark="†" if survives else "")
    return len(family)
