"""Silver-proxy statistics from rollout dumps (``calibadv proxy-stats``).

CalibAdv scores each intermediate search step by how many of its documents are *silver*
(retrieved by the group's best correct rollouts). These statistics say how good that proxy is:

* how often a group has no silver set at all (then the group stays plain GRPO),
* the distribution of c and how many penalised steps are "likely correct" (c = 1, Figure 2),
* on the synthetic world, where every question carries its gold supporting passages:
  precision/recall of the silver documents against gold, and of the step score (c > 0 and
  c = 1) against "the step retrieved a gold passage" — the ground truth the real world lacks
  (the paper approximates it with an LLM judge and human raters, Table 5),
* the paper's Figure 2 against that truth (:func:`figure2_gold`): how many penalised steps
  really retrieved a gold passage, beside how many the proxy calls likely correct.

Pure functions over the rollout-dump dicts of docs/design.md; file reading is at the edge.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from calibadv.errors import CalibAdvError
from calibadv.io import read_jsonl

_STEP_FILE = re.compile(r"^step_(\d+)\.jsonl$")


def c_label(c: float, k: int = 3) -> str:
    """Bucket label of a score: ``"0"``, ``"1/3"``, ``"2/3"``, ``"1"`` for k = 3 (``"a/k"``)."""
    frac = Fraction(round(c * k), k)
    if frac == 0:
        return "0"
    if frac == 1:
        return "1"
    return f"{frac.numerator}/{frac.denominator}"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _intermediate_steps(row: dict[str, Any]) -> list[tuple[int, list[str], float | None]]:
    """(index, doc ids, c) of each intermediate step of one rollout."""
    docs = row.get("doc_ids") or []
    cs = row.get("c")
    out = []
    for t, ids in enumerate(docs):
        c = None if cs is None or t >= len(cs) else cs[t]
        out.append((t, list(ids or []), c))
    return out


def step_stats(rows: Sequence[dict[str, Any]], k: int = 3) -> dict[str, Any]:
    """Statistics of the rollouts of one training step (one dump file)."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row.get("group")].append(row)

    silver_sizes, empty = [], 0
    s_tp = s_pred = s_gold = 0  # silver documents vs gold passages
    for members in groups.values():
        silver = set(members[0].get("silver_ids") or [])
        gold = set(members[0].get("supporting_ids") or [])
        silver_sizes.append(len(silver))
        if not silver:
            empty += 1
        if gold:
            s_tp += len(silver & gold)
            s_pred += len(silver)
            s_gold += len(gold)

    scores: list[float] = []
    hist: dict[str, int] = defaultdict(int)
    neg_steps = neg_c1 = neg_softpen = 0
    # step score vs "retrieved a gold passage"
    pos_tp = pos_pred = one_tp = one_pred = hit_total = hit_found = 0
    abs_err: list[float] = []
    has_gold = False
    for row in rows:
        gold = set(row.get("supporting_ids") or [])
        has_gold = has_gold or bool(gold)
        negative = (row.get("advantage") or 0.0) < 0
        for _, ids, c in _intermediate_steps(row):
            if c is None:
                continue
            scores.append(float(c))
            hist[c_label(float(c), k)] += 1
            if negative:
                neg_steps += 1
                neg_c1 += c >= 1.0 - 1e-9
                neg_softpen += c > 0
            if gold and ids:
                hit = bool(set(ids) & gold)
                hit_total += hit
                pos_pred += c > 0
                pos_tp += c > 0 and hit
                one_pred += c >= 1.0 - 1e-9
                one_tp += c >= 1.0 - 1e-9 and hit
                hit_found += hit and c > 0
                abs_err.append(abs(float(c) - len(set(ids) & gold) / len(ids)))
    n_scored = len(scores)
    stats: dict[str, Any] = {
        "rollouts": len(rows),
        "groups": len(groups),
        "empty_silver_frac": _ratio(empty, len(groups)),
        "silver_size_mean": _ratio(sum(silver_sizes), len(silver_sizes)),
        "scored_steps": n_scored,
        "c_mean": _ratio(sum(scores), n_scored),
        "c_hist": {key: hist[key] / n_scored for key in sorted(hist, key=_label_order)}
        if n_scored
        else {},
        "negative_scored_steps": neg_steps,
        "penalised_c1_frac": _ratio(neg_c1, neg_steps),
        "softened_frac": _ratio(neg_softpen, neg_steps),
        "has_gold": has_gold,
    }
    if has_gold:
        stats.update(
            {
                "silver_precision": _ratio(s_tp, s_pred),
                "silver_recall": _ratio(s_tp, s_gold),
                "c_pos_precision": _ratio(pos_tp, pos_pred),
                "c_pos_recall": _ratio(hit_found, hit_total),
                "c1_precision": _ratio(one_tp, one_pred),
                "c_gold_mae": _ratio(sum(abs_err), len(abs_err)),
                # [k, n] of each share: Table 5 pools them over seeds with Wilson's interval
                "counts": {"c_pos_precision": [pos_tp, pos_pred],
                           "c_pos_recall": [hit_found, hit_total], "c1_precision": [one_tp, one_pred]},
            }
        )
    return stats


def figure2_gold(
    rows: Sequence[dict[str, Any]], metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The paper's Figure 2 measured against gold, for the rollouts of one dumped step.

    GRPO gives every intermediate step of a negative rollout (advantage < 0) the rollout's
    negative advantage: these are the *penalised* steps. The paper estimates how many of them
    were useful with its silver proxy (c = 1: all documents silver, 43.97% for Qwen2.5-7B); the
    synthetic world knows the truth (the question's gold passages, ``supporting_ids``), so:

    * ``gold_frac_all``: penalised steps that retrieved a gold passage of their question, over
      every penalised step (an invalid or cut-off turn retrieved nothing: not gold);
    * on the steps the proxy can score (groups with a silver set, ``c`` not null), the same
      share ``gold_frac`` beside the proxy's ``c1_frac`` (= ``penalised_c1_frac``), and the
      proxy's ``c1_precision`` (c = 1 steps that hit gold) and ``c1_recall`` (gold-hitting
      steps the proxy calls c = 1);
    * ``negpos_ratio_before`` / ``negpos_ratio_after``: Σ|negative| / Σpositive advantage
      before and after the calibration's rebalancing, from the step's ``metrics.jsonl`` record.

    Rollouts without gold passages (the real world) count nowhere; a share whose population is
    empty is None.
    """
    penalised = hits = 0
    scored = scored_hits = c1 = c1_hits = 0
    for row in rows:
        gold = set(row.get("supporting_ids") or [])
        if not gold or (row.get("advantage") or 0.0) >= 0:
            continue
        for _, ids, c in _intermediate_steps(row):
            hit = bool(set(ids) & gold)
            penalised += 1
            hits += hit
            if c is None:
                continue
            one = float(c) >= 1.0 - 1e-9
            scored += 1
            scored_hits += hit
            c1 += one
            c1_hits += one and hit
    metrics = metrics or {}
    return {
        "penalised_steps": penalised,
        "gold_frac_all": _ratio(hits, penalised),
        "scored_penalised_steps": scored,
        "gold_frac": _ratio(scored_hits, scored),
        "c1_frac": _ratio(c1, scored),
        "c1_precision": _ratio(c1_hits, c1),
        "c1_recall": _ratio(c1_hits, scored_hits),
        "negpos_ratio_before": metrics.get("negpos_ratio_before"),
        "negpos_ratio_after": metrics.get("negpos_ratio_after"),
        # [k, n] of each share: the report's pooled Wilson intervals need counts, not ratios
        "counts": {"gold_frac_all": [hits, penalised], "gold_frac": [scored_hits, scored],
                   "c1_frac": [c1, scored], "c1_precision": [c1_hits, c1],
                   "c1_recall": [c1_hits, scored_hits]},
    }


def _label_order(label: str) -> float:
    num, _, den = label.partition("/")
    return float(num) / float(den or 1)


def proxy_stats(
    dumps: dict[int, Sequence[dict[str, Any]]],
    k: int = 3,
    metrics: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Per-step statistics plus the same statistics over every dumped rollout, and the paper's
    Figure 2 against gold per dumped step (``figure2``; ``metrics`` = the run's metrics.jsonl
    records, for the advantage ratios of those steps)."""
    if not dumps:
        raise CalibAdvError("no rollout dumps to summarise (set training.dump_rollouts_at)")
    per_step = {str(step): step_stats(rows, k) for step, rows in sorted(dumps.items())}
    by_step = {rec.get("step"): rec for rec in metrics}
    figure2 = {str(step): figure2_gold(rows, by_step.get(step)) for step, rows in sorted(dumps.items())}
    # group ids repeat across steps: make them unique before pooling
    pooled = [
        {**row, "group": (step, row.get("group"))}
        for step, rows in sorted(dumps.items())
        for row in rows
    ]
    return {
        "steps": sorted(dumps),
        "per_step": per_step,
        "overall": step_stats(pooled, k),
        "figure2": figure2,
    }


def read_dumps(rollouts_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """``{step: rows}`` from ``DIR/step_{N:06d}.jsonl`` files."""
    folder = Path(rollouts_dir)
    if not folder.is_dir():
        raise CalibAdvError(
            f"rollout dump folder {folder} does not exist (the run dumps rollouts at "
            "training.dump_rollouts_at; set it in the RunSpec)"
        )
    out: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(folder.iterdir()):
        m = _STEP_FILE.match(path.name)
        if m:
            out[int(m.group(1))] = read_jsonl(path)
    return out

