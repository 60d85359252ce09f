"""The F1 tables: Table 1 (main results: each method beside the paper's, its effect against
Search-R1, the start point with no RL, the collapse point) and Tables 2–4 (variants: the
ablation ladder, the silver proxy against the LLM judge, uniform scaling), each variant's
effect against the row above beside the paper's same difference.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from calibadv.report.blocks import (
    BENCHMARKS,
    NOT_IN_PAPER,
    PAPER_WORLD,
    SCORE_KEYS,
    START_POINT_LABEL,
    TABLE_HEADERS,
    TABLE_KEYS,
    Cell,
    Setting,
    Table,
    fmt,
    model_label,
    paper_model_of,
    render_blocks,
    setting_of,
)
from calibadv.report.collect import Results
from calibadv.report.questions import start_point_cells
from calibadv.report.scores import (
    bench_scores,
    collapse_label,
    effects,
    our_scores,
    paper_effects,
)
from calibadv.report.stats import t_interval
from calibadv.workflow.resources import stage_resources
from calibadv.workflow.runs import model_methods, start_model


def start_point_scores(config: dict[str, Any], results: Results, model: str) -> dict[str, Cell] | None:
    """×100 scores of the model's start point with no RL (one evaluation, no seeds), plus the
    average when every benchmark has one; with the question bootstrap interval where its
    predictions were collected (like any one-seed row). None when it was not evaluated."""
    start = start_model(config, model)
    found = {b: results.start_evals.get((start, b)) for b, _ in BENCHMARKS}
    if all(m is None for m in found.values()):
        return None
    return {**bench_scores(found), **start_point_cells(results, start, "f1", [b for b, _ in BENCHMARKS])}


def time_per_step(results: Results, model: str, method: str) -> Cell:
    """Mean ``time_s`` per step of each seed's run, aggregated over seeds."""
    per_seed = []
    for seed in results.seeds(model, method):
        times = [float(r["time_s"]) for r in results.runs[(model, method, seed)].metrics
                 if r.get("time_s") is not None]  # fmt: skip
        if times:
            per_seed.append(mean(times))
    return t_interval(per_seed)


def judge_fallback_share(results: Results, model: str, method: str) -> Cell:
    """``"0.4% (3/800)"``: judged steps of the run's seeds scored by the silver fallback
    (None when no step was sent to the judge: the run does not use it)."""
    fell = steps = 0
    for seed in results.seeds(model, method):
        for r in results.runs[(model, method, seed)].metrics:
            fell += int(r.get("judge_fallback") or 0)
            steps += int(r.get("judge_steps") or 0)
    return f"{100 * fell / steps:.1f}% ({fell}/{steps})" if steps else None


def interval_notes(family: int) -> list[str]:
    """What the F1 tables' intervals are and resample (the row labels say which applies)."""
    notes = [
        "95% intervals, as the row label says: 'n=k' alone = mean ± t(0.975, k−1) s/sqrt(k) over "
        "k RL seeds (no interval at n=1 without per-question results); '2-level bootstrap' = "
        "[2.5%, 97.5%] percentiles of 2000 draws that resample the seeds, then the questions "
        "within each split of each drawn seed (effects: per-question differences paired by seed "
        "and question; with 2–4 seeds the interval spanning both this and the t-interval over "
        "the seeds, and the larger p-value: a seed bootstrap of so few seeds is too narrow); "
        "'question bootstrap' = the same at one seed (the questions alone); "
        "'Wilson' = a share's score interval of the questions pooled over seeds (in [0, 100]).",
        "Avg. = the mean of the seven split scores (the paper's); Pooled = the mean over every "
        "test question of every split (splits weighted by their questions); '—' = not "
        "measured, or a structural zero (both methods exactly 0 everywhere).",
    ]
    if family:
        notes.append(
            f"Holm: the Avg. effects of this table's {family} bootstrap effect rows are one "
            "family; p = two-sided bootstrap p-value of 'the effect is 0' (2·(1 + the draws on "
            "the smaller side of 0) / (draws + 1), capped at 1), Holm-adjusted step-down; † = "
            "survives at family-wise α = 0.05. Split and pooled cells are not adjusted.")
    return notes


# --------------------------------------------------------------------------- Table 1


#: Table 1's columns after the labels: F1 per split, Avg., Pooled, collapse point
TABLE1_KEYS = TABLE_KEYS + ["collapse"]


def table1_main(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    table = Table(
        "table1_main",
        "Table 1: main results (F1 ×100; 95% CI: t over seeds, or bootstrap over seeds, then "
        "questions — see the row label) and collapse point",
        ["Model", "Method", "", *TABLE_HEADERS, "Collapse"],
    )
    paper_rows = {(r["model"], r["method"]): r for r in paper.get("table1_main", [])}
    paper_models = {r["model"] for r in paper.get("table1_main", [])}
    entries: list[tuple[Any, ...]] = []  # block() arguments, rendered after Holm
    seen: set[tuple[str, str]] = set()  # paper rows beside one of ours (its own setting)
    with_start = False  # some model's start point was evaluated: its note follows
    for model in config["models"]:
        setting = setting_of(config, model, paper_model_of(config, model, paper_models))
        start = _start_point_entry(config, results, model, setting)
        if start is not None:
            with_start = True
            entries.append(start)
        ours = _table1_method_entries(config, results, model, setting, paper_rows)
        entries += ours
        if setting.same:
            seen |= {(setting.paper_model, e[0][1]) for e in ours}
    family = render_blocks(table, entries)
    _table1_paper_only_rows(table, paper_rows, seen)
    table.notes += _table1_notes(config, family, with_start)
    return table


def _start_point_entry(config: dict[str, Any], results: Results, model: str,
                       setting: Setting) -> tuple[Any, ...] | None:
    """The block of the model's start point with no RL (None when it was not evaluated): its
    F1 with the question bootstrap where its predictions are there; no paper row, no effect."""
    start = start_point_scores(config, results, model)
    if start is None:
        return None
    return ([model_label(config, model), START_POINT_LABEL], setting, {**start, "collapse": None},
            dict.fromkeys(TABLE1_KEYS, NOT_IN_PAPER), TABLE1_KEYS)  # fmt: skip


def _table1_method_entries(config: dict[str, Any], results: Results, model: str, setting: Setting,
                           paper_rows: dict[tuple[str, str], dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The blocks of the model's labelled methods: ours beside the paper's row of the same label
    (or "not in paper") and, but for the reference, the effect against the reference."""
    labels = config["report"]["method_labels"]
    reference = config["report"]["reference_method"]
    ref_label = labels.get(reference, reference)
    ref_prow = paper_rows.get((setting.paper_model, ref_label), {})
    paper_methods = {m for _, m in paper_rows}
    out = []
    for method in [m for m in model_methods(config, model) if m in labels]:
        ours = {**our_scores(results, model, method), "collapse": collapse_label(results, model, method)}
        prow = paper_rows.get((setting.paper_model, labels[method]), {})
        theirs = {**prow.get("scores", {}), "collapse": prow.get("collapse_point")}
        in_paper = labels[method] in paper_methods
        if not in_paper:  # a row of ours (e.g. SAPO): say so
            theirs = dict.fromkeys(TABLE1_KEYS, NOT_IN_PAPER)
        effect = None
        if method != reference and reference in model_methods(config, model):
            paper_eff = (paper_effects(prow.get("scores", {}), ref_prow.get("scores", {}), SCORE_KEYS)
                         if in_paper and prow and ref_prow else dict.fromkeys(SCORE_KEYS))  # fmt: skip
            effect = (ref_label, effects(results, model, method, reference), paper_eff)
        out.append(([model_label(config, model), labels[method]], setting, ours, theirs,
                    TABLE1_KEYS, effect))  # fmt: skip
    return out


def _table1_paper_only_rows(table: Table, paper_rows: dict[tuple[str, str], dict[str, Any]],
                            seen: set[tuple[str, str]]) -> None:
    """The paper's rows no run of ours sits beside in its own setting, for reference."""
    for (pmodel, method_label), prow in paper_rows.items():
        if (pmodel, method_label) in seen:
            continue
        table.breaks.append(len(table.rows))
        table.rows.append([pmodel, method_label, f"paper: {pmodel}, {PAPER_WORLD}",
                           *(fmt(prow["scores"].get(k)) for k in TABLE_KEYS),
                           fmt(prow.get("collapse_point"))])  # fmt: skip


def _table1_notes(config: dict[str, Any], family: int, with_start: bool) -> list[str]:
    notes = [
        "Each block: ours, the paper's numbers, and — only where our run is in the paper's "
        "own setting (real world, a model the paper ran) — ours − paper. Elsewhere an absolute "
        "difference means nothing: the effect rows compare our difference between methods "
        f"(each method − {ref_label_of(config)}, paired by seed and question) with the paper's "
        "same difference.",
        *interval_notes(family),
        "Rows pair our run with the paper's by method label (config report.method_labels) and "
        "the paper model named in the 'paper:' label (models.<m>.paper_model, else the model's "
        "label if the paper ran it, else report.paper_model); '—' = not run / not reported; "
        f"'{NOT_IN_PAPER}' = a method the paper never ran (rows of ours, e.g. SAPO). The "
        "paper's own rows follow, for reference.",
        "Collapse: step / total steps for one seed; over several seeds, how many collapsed "
        "and at which steps.",
    ]
    if with_start:
        notes.append(
            f"'{START_POINT_LABEL}': the model every run of that model starts from (its SFT warm "
            "start, else the base model), evaluated like the runs (same splits, greedy) with no "
            "RL; one evaluation, no seeds: its interval is the question bootstrap (its test "
            "questions resampled within each split), none without its predictions. A method's "
            "scores at or below it mean its RL did not raise held-out F1 (evaluation.start_point)."
        )
    return notes


def ref_label_of(config: dict[str, Any]) -> str:
    reference = config["report"]["reference_method"]
    return config["report"]["method_labels"].get(reference, reference)


# --------------------------------------------------------------------------- Tables 2–4


def _variant_table(
    key: str,
    title: str,
    section: dict[str, Any],
    paper_rows: list[dict[str, Any]],
    config: dict[str, Any],
    results: Results,
    metrics: list[tuple[str, str]],
    extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Table:
    """Rows per configured variant (our method -> paper label) and per metric, each with its
    effect against the variant above it (same metric), ours beside the paper's."""
    model = section.get("model")
    cols = ["Variant", "Metric", "", *TABLE_HEADERS, *(h for _, h in extra)]
    table = Table(key, title, cols)
    entries: list[tuple[Any, ...]] = []  # block() arguments, rendered after Holm
    if model is None:
        table.notes.append("No model configured for this table (report.<table>.model).")
    pmodel = paper_rows[0]["model"] if paper_rows else config["report"]["paper_model"]
    setting = setting_of(config, model, pmodel) if model else Setting("—", f"{pmodel}, {PAPER_WORLD}", pmodel, False)
    keys = TABLE_KEYS + [k for k, _ in extra]
    variants = list(section.get("rows", {}).items())
    for metric, paper_metric in metrics:
        for i, (method, label) in enumerate(variants):
            prow = _paper_variant(paper_rows, label, paper_metric)
            run = model is not None and method in model_methods(config, model)
            ours = our_scores(results, model, method, metric) if run else {}
            theirs = dict(prow.get("scores", {}))
            for ekey, _ in extra:
                ours[ekey] = _extra_value(ekey, config, results, model, method) if run else None
                theirs[ekey] = prow.get(ekey)
            effect = None
            if i > 0:
                above, above_label = variants[i - 1]
                above_run = run and above in model_methods(config, model)
                ours_eff = effects(results, model, method, above, metric) if above_run else {}
                paper_eff = paper_effects(theirs, _paper_variant(paper_rows, above_label, paper_metric)
                                          .get("scores", {}), SCORE_KEYS)  # fmt: skip
                effect = (above_label, ours_eff, paper_eff)
            entries.append(([label, paper_metric], setting, ours, theirs, keys, effect))
    family = render_blocks(table, entries)
    table.notes.append(
        f"Our runs: {setting.ours}; paper: {setting.paper}. Effect rows: each row − the row "
        "above (same metric; ours paired by seed and question) beside the paper's same "
        "difference"
        + ("; Δ rows: ours − paper (the paper's own setting)." if setting.same
           else "; no ours − paper row: the settings differ.")
    )
    table.notes += interval_notes(family)
    return table


def _paper_variant(paper_rows: list[dict[str, Any]], label: str, paper_metric: str) -> dict[str, Any]:
    return next(
        (r for r in paper_rows if r.get("variant") == label and r.get("metric", paper_metric) == paper_metric),
        {},
    )


def _extra_value(key: str, config: dict[str, Any], results: Results, model: str, method: str) -> Cell:
    if key == "time_per_step_s":
        return time_per_step(results, model, method)
    if key == "judge_fallback":
        return judge_fallback_share(results, model, method)
    if key == "gpus":
        res = stage_resources(config, "train", model)
        return f"{res['gpus']}x GPU" if res["gpus"] else f"CPU x{res['cpus']}"
    raise KeyError(key)


def table2_ablation(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    table = _variant_table(
        "table2_ablation",
        "Table 2: ablation ladder — F1 ×100 and High-PPL ratio (%)",
        config["report"]["ablation"],
        paper.get("table2_ablation", []),
        config,
        results,
        [("f1", "F1"), ("high_ppl_ratio", "HighPPLRatio")],
    )
    table.notes.append("High-PPL ratio: share of outputs with perplexity ≥ 50 (×100).")
    return table


def table3_proxy(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    table = _variant_table(
        "table3_proxy",
        "Table 3: silver-document proxy vs LLM-judge scoring — F1 ×100, time per step, GPUs",
        config["report"]["proxy"],
        paper.get("table3_proxy", []),
        config,
        results,
        [("f1", "F1")],
        extra=[("time_per_step_s", "s/step"), ("gpus", "GPUs"), ("judge_fallback", "silver fallback")],
    )
    table.notes.append("Time per step: mean `time_s` of metrics.jsonl (our hardware, not H20s).")
    table.notes.append(
        "Silver fallback: share of the judged steps (all seeds) that got no verdict and were "
        "scored by the silver proxy instead (judge_fallback / judge_steps of metrics.jsonl; "
        "capped by judge.max_fallback_frac); '—' = the run does not use the judge."
    )
    return table


def table4_uniform(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    return _variant_table(
        "table4_uniform",
        "Table 4: soft penalty vs uniform negative-advantage scaling (×0.5) — F1 ×100",
        config["report"]["uniform"],
        paper.get("table4_uniform", []),
        config,
        results,
        [("f1", "F1")],
    )
