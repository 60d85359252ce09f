"""Table 9: collapse under stress — per method of ``report.stress.model`` the collapse point,
validation and test F1 and the High-PPL ratio with its effects against the reference (Holm over
the Val F1 last effects), and the same collapses as time-to-event (Kaplan–Meier, log-rank).
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from calibadv.report.blocks import (
    BENCHMARKS,
    MISSING,
    Cell,
    Setting,
    Table,
    diff,
    model_label,
    paper_model_of,
    render_blocks,
    setting_of,
)
from calibadv.report.collect import Results
from calibadv.report.questions import effect_cells, has_questions, seed_effect, share_cells
from calibadv.report.scores import collapse_label, seed_scores
from calibadv.report.stats import Bounds, t_interval
from calibadv.workflow.runs import model_methods


def _val_f1(results: Results, model: str, method: str, which: str) -> dict[int, float]:
    """seed -> peak or last validation F1 (×100)."""
    out = {}
    for seed in results.seeds(model, method):
        val = [r for r in results.runs[(model, method, seed)].val if r.get("f1") is not None]
        if val:
            scores = [100.0 * float(r["f1"]) for r in sorted(val, key=lambda r: r["step"])]
            out[seed] = max(scores) if which == "peak" else scores[-1]
    return out


def _last_metric(results: Results, model: str, method: str, key: str, scale: float = 100.0) -> dict[int, float]:
    out = {}
    for seed in results.seeds(model, method):
        recs = [r for r in results.runs[(model, method, seed)].metrics if r.get(key) is not None]
        if recs:
            out[seed] = scale * float(max(recs, key=lambda r: r["step"])[key])
    return out


def _last_share(results: Results, model: str, method: str, key: str) -> Cell:
    """A batch share at each seed's last step (×100), its rollouts pooled over the seeds with
    Wilson's interval; the mean over seeds alone when a record has no ``rollouts`` count (the
    verl backend, old runs). None when no seed logged it."""
    from calibadv.shares import wilson

    recs = []
    for seed in results.seeds(model, method):
        found = [r for r in results.runs[(model, method, seed)].metrics if r.get(key) is not None]
        if found:
            recs.append(max(found, key=lambda r: r["step"]))
    if not recs:
        return None
    if all(r.get("rollouts") for r in recs):
        k = sum(round(float(r[key]) * int(r["rollouts"])) for r in recs)
        n = sum(int(r["rollouts"]) for r in recs)
        low, high = wilson(k, n)
        return Bounds(100 * k / n, 100 * low, 100 * high, len(recs), how="wilson")
    return Bounds(100 * mean(float(r[key]) for r in recs), None, None, len(recs), how="wilson")


#: Table 9's columns after the labels (key, header)
STRESS_COLUMNS = [("collapse", "Collapsed"), ("val_peak", "Val F1 peak"), ("val_last", "Val F1 last"),
                  ("format_last", "Format % last step"), ("average", "Test F1 avg."),
                  ("high_ppl", "High-PPL % avg."), ("train_high_ppl", "High-PPL % last step")]  # fmt: skip
#: Table 9's Holm family: each method's effect on validation F1 at the last validation, the
#: F1 a collapse takes away (the test checkpoint is the last before a collapse, so its F1 hides it)
STRESS_FAMILY = "val_last"


def table9_stress(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    """Collapse under stress: the runs of ``report.stress.model`` (a learning rate at which plain
    GRPO degrades), each method's collapse point and High-PPL ratio over seeds, and its effects
    against ``report.stress.reference`` (bootstrap, Holm over the Val F1 last effects)."""
    section = config["report"]["stress"]
    model = section.get("model")
    table = Table(
        "table9_stress",
        "Table 9: collapse under stress — collapse point and High-PPL ratio per method",
        ["Model", "Method", "", *(h for _, h in STRESS_COLUMNS)],
    )
    if model is None:
        table.notes.append("No stress runs configured (report.stress.model).")
        return table
    paper_models = {r["model"] for r in paper.get("table1_main", [])}
    setting = setting_of(config, model, paper_model_of(config, model, paper_models))
    entries = _stress_entries(config, results, paper, model, setting)
    family = render_blocks(table, entries, STRESS_FAMILY)
    table.notes += _stress_notes(config, model, setting, family)
    return table


def _stress_per_seed(results: Results, model: str, method: str) -> dict[str, dict[int, float]]:
    """key -> {seed: value ×100}: one number per run of every Table 9 column but the collapse."""
    f1 = seed_scores(results, model, method, "f1")
    ppl = seed_scores(results, model, method, "high_ppl_ratio")
    return {"val_peak": _val_f1(results, model, method, "peak"),
            "val_last": _val_f1(results, model, method, "last"),
            "format_last": _last_metric(results, model, method, "format_rate"),
            "average": f1.get("average", {}), "high_ppl": ppl.get("average", {}),
            "train_high_ppl": _last_metric(results, model, method, "high_ppl_ratio")}  # fmt: skip


def _stress_ours(results: Results, model: str, method: str) -> dict[str, Cell]:
    """A method's Table 9 levels: F1 as mean ± t over seeds; shares as Wilson's interval of the
    rollouts / questions pooled over seeds, never mean ± t (issue 31); the collapse count."""
    values = _stress_per_seed(results, model, method)
    ours: dict[str, Cell] = {k: t_interval(list(v.values())) for k, v in values.items()}
    ours.update({k: _last_share(results, model, method, m) for k, m in
                 (("format_last", "format_rate"), ("train_high_ppl", "high_ppl_ratio"))})
    ours["high_ppl"] = share_cells(results, model, method, "high_ppl_ratio",
                                   [b for b, _ in BENCHMARKS]).get("average")
    ours["collapse"] = collapse_label(results, model, method)
    return ours


def _stress_effects(results: Results, model: str, method: str, reference: str) -> dict[str, Cell]:
    """``method − reference`` per Table 9 column, paired by seed: the test F1 and High-PPL
    averages by the two-level bootstrap (seeds, then questions) where both methods' predictions
    are there; everything else — one number per run (validation F1, last-step shares) — by the
    seed bootstrap (:func:`calibadv.report.questions.seed_effect`). "—" for structural zeros."""
    ours, ref = _stress_per_seed(results, model, method), _stress_per_seed(results, model, reference)
    out: dict[str, Cell] = {k: seed_effect(ours[k], ref[k]) for k in ours}
    if has_questions(results, model, method) and has_questions(results, model, reference):
        benches = [b for b, _ in BENCHMARKS]
        for key, metric in (("average", "f1"), ("high_ppl", "high_ppl_ratio")):
            out[key] = effect_cells(results, model, method, reference, metric, benches).get("average")
    return out


def _stress_entries(config: dict[str, Any], results: Results, paper: dict[str, Any], model: str,
                    setting: Setting) -> list[tuple[Any, ...]]:
    """Table 9's blocks (:func:`block` arguments): per method ours, the paper's collapse point
    (Table 1) and High-PPL average (Table 2, where the method is an ablation row), and the
    effect against the reference beside the paper's High-PPL difference."""
    labels = config["report"]["method_labels"]
    reference = config["report"]["stress"]["reference"]
    paper_t1 = {(r["model"], r["method"]): r for r in paper.get("table1_main", [])}
    ablation = config["report"]["ablation"]["rows"]
    paper_t2 = {r["variant"]: r for r in paper.get("table2_ablation", []) if r.get("metric") == "HighPPLRatio"}
    methods = model_methods(config, model)
    keys = [k for k, _ in STRESS_COLUMNS]
    entries = []
    for method in methods:
        label = labels.get(method, method)
        prow = paper_t1.get((setting.paper_model, label), {})
        p2 = paper_t2.get(ablation.get(method, ""), {})
        theirs: dict[str, Cell] = {"collapse": prow.get("collapse_point"),
                                   "high_ppl": (p2.get("scores") or {}).get("average")}  # fmt: skip
        effect = None
        if reference in methods and method != reference:
            pref = paper_t2.get(ablation.get(reference, ""), {})
            effect = (labels.get(reference, reference), _stress_effects(results, model, method, reference),
                      {"high_ppl": diff(theirs["high_ppl"], (pref.get("scores") or {}).get("average"))})  # fmt: skip
        entries.append(([model_label(config, model), label], setting, _stress_ours(results, model, method),
                        theirs, keys, effect))  # fmt: skip
    return entries


def _stress_notes(config: dict[str, Any], model: str, setting: Setting, family: int) -> list[str]:
    training = {**(config.get("training") or {}), **(config["models"][model].get("training") or {})}
    notes = [
        f"Stress setting: model entry {model!r} (training lr {training.get('lr')}, "
        f"{training.get('steps')} steps); collapse as defined in calibadv.evaluate.collapse "
        f"(collapse_delta {training.get('collapse_delta')}, window {training.get('collapse_window')}): "
        "how many seeds collapsed, and at which steps.",
        "Val F1: greedy validation F1 ×100 (peak over training, and at the last validation); "
        "Test: the evaluated checkpoint (the last before a collapse); High-PPL: share of "
        "outputs with perplexity ≥ 50, ×100 (test average, and the training batch at the last "
        "step). Ours: mean ± 95% t-interval over seeds for F1; shares (format, High-PPL at the "
        "last step) as the rollouts of every seed counted together with Wilson's 95% interval "
        "(the mean alone without counts); the test High-PPL average is a mean of split shares, "
        "no interval (Table 2's Pooled column has one).",
        "Effects (each method − the reference, paired by seed): [2.5%, 97.5%] percentiles of "
        "2000 bootstrap draws. Test F1 and High-PPL averages: the 2-level bootstrap, which "
        "resamples the seeds, then the questions within each split of each drawn seed "
        "(per-question differences paired by seed and question), where both methods' "
        "predictions are there; validation F1 and the last-step shares (one number per run, "
        "nothing per question) and any test average without predictions: the seed bootstrap, "
        "which resamples the per-seed differences over the seeds (one seed: the difference "
        "alone, no interval). With 2–4 seeds, either gives the interval spanning itself and "
        "the t-interval over the seeds, and the larger p-value (too few seeds for a bootstrap "
        "alone). '—' = a structural zero (both methods exactly 0).",
        "Paper: collapse point (Table 1) and High-PPL average (Table 2, where the method is an "
        f"ablation row) of {setting.paper_model} at its own learning rate — not a stress run.",
    ]
    if family:
        notes.append(
            f"Holm: the Val F1 last effects of this table's {family} effect rows are one family "
            "(the F1 a collapse takes away); p = two-sided bootstrap p-value of 'the effect is "
            "0' (2·(1 + the draws on the smaller side of 0) / (draws + 1), capped at 1), "
            "Holm-adjusted step-down; † = survives at family-wise α = 0.05. Other cells are not "
            "adjusted.")
    return notes


def table9_survival(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    """Collapse under stress as time-to-event (calibadv.report.survival): per method the
    collapsed count with its exact interval, the Kaplan–Meier median step and, beside the
    reference, the log-rank test."""
    from calibadv.report.survival import survival_rows

    section = config["report"]["stress"]
    model, reference = section.get("model"), section["reference"]
    table = Table("table9_survival",
                  "Table 9 (time to event): collapse under stress, censored at the last step",
                  ["Model", "Method", "Runs", "Collapsed", "Collapsed % [exact 95% CI]",
                   "Median step (KM)", "Log-rank χ² vs ref.", "p"], label_cols=2)
    if model is None:
        table.notes.append("No stress runs configured (report.stress.model).")
        return table
    labels = config["report"]["method_labels"]
    for r in survival_rows(results, model, model_methods(config, model), reference):
        ci = r.share_ci
        table.rows.append([
            model_label(config, model), labels.get(r.method, r.method), str(r.n),
            str(r.collapsed),
            f"{100 * r.collapsed / r.n:.0f} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else MISSING,
            "not reached" if r.median is None else f"{r.median:g}",
            MISSING if r.logrank_chi2 is None else f"{r.logrank_chi2:.2f}",
            MISSING if r.logrank_p is None else f"{r.logrank_p:.3f}",
        ])
    table.notes += [
        "A run that did not collapse is censored at its last validated step (not seen to "
        "collapse within the run). Collapsed %: Clopper–Pearson exact interval; median: the "
        "first step where the Kaplan–Meier survival is ≤ 0.5 ('not reached' when fewer than "
        f"half collapsed); log-rank: two-sample test against {labels.get(reference, reference)} "
        "(1 df), '—' for the reference itself.",
    ]
    return table
