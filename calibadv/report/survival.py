"""Collapse under stress as time-to-event (Table 9's survival block and the Kaplan–Meier figure).

A stress run either collapsed (its ``selection.json`` names the collapse step, calibadv.evaluate
.collapse) or did not; one that did not is *censored* at its last validated step — "not seen to
collapse within the run", never "collapsed at the end". Per method: how many seeds collapsed,
with the exact (Clopper–Pearson) interval of that share; the Kaplan–Meier median step (None when
fewer than half collapsed); and beside the reference method the two-sample log-rank test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calibadv.evaluate.intervals import (
    Survival,
    clopper_pearson,
    kaplan_meier,
    logrank,
    median_time,
)
from calibadv.report.collect import Results


def run_survival(results: Results, model: str, method: str) -> list[Survival]:
    """One :class:`Survival` per finished seed: the collapse step, or the last validated step
    (censored); runs without a selection (unfinished) are left out."""
    out = []
    for seed in results.seeds(model, method):
        run = results.runs[(model, method, seed)]
        if run.selection is None:
            continue
        step = run.selection.get("collapse_step")
        if step is not None:
            out.append(Survival(float(step), True))
        else:
            vals = [int(r["step"]) for r in run.val if r.get("step") is not None]
            total = (run.done or {}).get("steps")
            out.append(Survival(float(max(vals) if vals else (total or 0)), False))
    return out


@dataclass(frozen=True)
class SurvivalRow:
    """One method's survival summary (what Table 9's survival block prints)."""

    method: str
    n: int
    collapsed: int
    share_ci: tuple[float, float] | None  # exact interval of collapsed / n, fractions
    median: float | None  # Kaplan–Meier median step; None: not reached
    logrank_chi2: float | None = None  # against the reference; None for the reference itself
    logrank_p: float | None = None


def survival_rows(results: Results, model: str, methods: list[str],
                  reference: str) -> list[SurvivalRow]:
    """Per method with at least one finished run: counts, exact interval, median, log-rank."""
    runs = {m: run_survival(results, model, m) for m in methods}
    ref = runs.get(reference) or []
    rows = []
    for m, rs in runs.items():
        if not rs:
            continue
        k = sum(1 for r in rs if r.event)
        chi, p = logrank(rs, ref) if (m != reference and ref) else (None, None)
        rows.append(SurvivalRow(m, len(rs), k, clopper_pearson(k, len(rs)), median_time(rs),
                                chi, p))
    return rows


def km_figure(results: Results, config: dict[str, Any]) -> Any:
    """Kaplan–Meier curves of the stress runs (``report.stress.model``), one step line per
    method; censored runs are ticks. No band: with ~10 runs per arm the curve's interval would
    be wider than the plot, and the log-rank test (Table 9) carries the comparison."""
    import matplotlib.pyplot as plt

    model = config["report"]["stress"].get("model")
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = config["report"].get("method_labels") or {}
    drawn = False
    if model is not None:
        from calibadv.workflow.runs import model_methods

        for method in model_methods(config, model):
            rs = run_survival(results, model, method)
            if not rs:
                continue
            curve = kaplan_meier(rs)
            end = max(r.time for r in rs)
            xs = [t for t, _ in curve] + [end]
            ys = [s for _, s in curve] + [curve[-1][1]]
            line, = ax.step(xs, ys, where="post",
                            label=f"{labels.get(method, method)} (n={len(rs)})")
            cens = [r.time for r in rs if not r.event]
            ax.plot(cens, [_at(curve, t) for t in cens], "|", color=line.get_color(), ms=10)
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no stress runs (report.stress.model) finished", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("RL step")
    ax.set_ylabel("share of runs not collapsed")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Collapse under stress: Kaplan–Meier (ticks: censored runs; no band)",
                 fontsize=9)
    if drawn:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _at(curve: list[tuple[float, float]], t: float) -> float:
    s = 1.0
    for ti, si in curve:
        if ti <= t:
            s = si
    return s
