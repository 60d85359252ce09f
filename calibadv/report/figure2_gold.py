"""Table 8: the paper's Figure 2 against gold — per dumped step, the penalised steps that
really retrieved a gold passage beside those the silver proxy calls c = 1.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from calibadv.report.blocks import MISSING, PAPER_WORLD, Table, fmt, model_label, setting_of
from calibadv.report.collect import Results
from calibadv.report.stats import n_label, t_interval
from calibadv.workflow.runs import model_methods

#: (proxy-stats figure2 key, row label, ×100) of Table 8.
FIGURE2_ROWS = [
    ("gold_frac_all", "penalised steps that retrieved gold, all (%)", True),
    ("gold_frac", "penalised steps that retrieved gold, scored groups (%)", True),
    ("c1_frac", "penalised steps the proxy calls c = 1 (%)", True),
    ("c1_precision", "proxy precision: c = 1 steps that retrieved gold (%)", True),
    ("c1_recall", "proxy recall: gold steps called c = 1 (%)", True),
    ("negpos_ratio_before", "neg/pos advantage ratio, before rebalancing", False),
    ("negpos_ratio_after", "neg/pos advantage ratio, after rebalancing", False),
]


def figure2_seed_values(results: Results, model: str, method: str) -> dict[str, dict[int, list[float]]]:
    """key -> {dumped step: [value per seed]} from the runs' proxy statistics (``figure2``)."""
    out: dict[str, dict[int, list[float]]] = {}
    for seed in results.seeds(model, method):
        stats = results.proxy.get((model, method, seed)) or {}
        for step, rec in (stats.get("figure2") or {}).items():
            for key, _, pct in FIGURE2_ROWS:
                if rec.get(key) is not None:
                    value = float(rec[key]) * (100.0 if pct else 1.0)
                    out.setdefault(key, {}).setdefault(int(step), []).append(value)
    return out


def share_counts(results: Results, model: str, method: str, key: str,
                 step: int | None = None) -> tuple[int, int] | None:
    """``(k, n)`` of a Figure 2 share pooled over seeds, at one dumped step or (None) over all
    of them; None when no proxy file carries its counts (a ratio, or an old file)."""
    k = n = 0
    for seed in results.seeds(model, method):
        stats = results.proxy.get((model, method, seed)) or {}
        for at, rec in (stats.get("figure2") or {}).items():
            kn = (rec.get("counts") or {}).get(key)
            if kn and (step is None or int(at) == step):
                k, n = k + int(kn[0]), n + int(kn[1])
    return (k, n) if n else None


def pooled_share(results: Results, model: str, method: str, key: str) -> str:
    """``k/n`` of a Figure 2 share pooled over seeds and dumped steps, as ``64.0 [58.1, 69.5]``
    (Wilson, percent); "—" when no proxy file carries its counts (a ratio, or an old file)."""
    from calibadv.evaluate.intervals import fmt_share

    kn = share_counts(results, model, method, key)
    return fmt_share(*kn) if kn else MISSING


def _figure2_cells(results: Results, model: str, method: str, key: str, pct: bool,
                   per: dict[int, list[float]], steps: list[int]) -> list[str]:
    """Table 8's cells of one quantity: per step and the mean over steps. A share (``pct``)
    is never a t-interval: per step the count pooled over seeds with Wilson's interval (the
    mean over seeds alone for a file without counts), over steps the mean of the step shares
    (the pooled column gives its interval). A ratio: mean ± t over seeds (each seed's mean over
    the steps, then over seeds)."""
    from calibadv.evaluate.intervals import fmt_share

    if pct:
        out = []
        for s in steps:
            kn = share_counts(results, model, method, key, s)
            if s not in per:
                out.append(MISSING)
            else:
                out.append(fmt_share(*kn) if kn else fmt(mean(per[s]), 1))
        shares = [mean(per[s]) for s in steps if s in per]
        return out + [fmt(mean(shares), 1) if shares else MISSING]
    ns = [len(v) for v in per.values()]
    complete = [s for s in steps if s in per and len(per[s]) == max(ns)]
    seed_means = [mean(per[s][i] for s in complete) for i in range(max(ns))] if complete else []
    return [*(fmt(t_interval(per.get(s, []))) for s in steps), fmt(t_interval(seed_means))]


def table8_figure2_gold(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    """The paper's Figure 2 against gold: per dumped step, how many penalised steps really
    retrieved a gold passage beside how many the silver proxy calls likely correct."""
    runs = [(m, x) for m in config["models"] for x in model_methods(config, m)
            if figure2_seed_values(results, m, x)]  # fmt: skip
    values = {run: figure2_seed_values(results, *run) for run in runs}
    steps = sorted({s for v in values.values() for per in v.values() for s in per})
    table = Table(
        "table8_figure2_gold",
        "Table 8: paper Figure 2 against gold — penalised intermediate steps (negative rollouts) "
        "that retrieved a gold passage vs those the silver proxy calls c = 1, by dumped step",
        ["Run", "Quantity", "", *(f"step {s}" for s in steps), "mean over steps",
         "pooled % [Wilson 95%]"],
    )
    for model, method in runs:
        setting = setting_of(config, model, config["report"]["paper_model"])
        first = True
        table.breaks.append(len(table.rows))
        for key, label, pct in FIGURE2_ROWS:
            per = values[(model, method)].get(key, {})
            if not per:
                continue
            ns = [len(v) for v in per.values()]
            table.rows.append([
                f"{model_label(config, model)} / {method}" if first else "", label,
                f"ours: {setting.ours} ({n_label(ns)})" if first else "",
                *_figure2_cells(results, model, method, key, pct, per, steps),
                pooled_share(results, model, method, key),
            ])  # fmt: skip
            first = False
    facts = paper.get("facts", {})
    c1 = facts.get("figure2_penalised_c1_pct")
    table.notes += [
        "Penalised steps: intermediate steps of negative rollouts (GRPO advantage < 0); 'all' "
        "counts every one, 'scored groups' only those of groups with a silver set (where the "
        "proxy gives c). Gold: the step retrieved one of its question's supporting passages "
        "(synthetic world). Precision/recall of c = 1 against gold on the scored steps. Ratios: "
        "Σ|negative| / Σpositive advantage, from metrics.jsonl at the same step.",
        "Shares (%): per step, the steps of every seed counted together, k/n with Wilson's 95% "
        "score interval (inside [0, 100]; never a t-interval; the mean over seeds alone for "
        "proxy files without counts); 'mean over steps' is the mean of the step shares, no "
        "interval. Pooled: every seed and dumped step counted together, with Wilson's interval "
        "(it treats steps as independent, so it is narrower than a question-level one); '—' "
        "for the ratios and for files without counts. Ratios: mean ± 95% t-interval over seeds "
        "(n in the label; n=1: no interval); 'mean over steps' each seed's mean, then over seeds.",
    ]
    if c1 is not None:
        table.notes.append(
            f"Paper ({config['report']['paper_model']}, {PAPER_WORLD}, silver proxy only, no "
            f"gold): {c1}% of penalised steps have c = 1. No gold exists there."
        )
    if not runs:
        table.notes.append("No run has proxy statistics with a figure2 section (proxy.methods).")
    return table
