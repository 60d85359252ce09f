"""The paper's tables as plain rows: for every entry, our value (mean over seeds with a 95%
t-interval), the paper's, and what can be compared.

Where our runs are in the paper's setting (the real world and a model the paper ran), a block
shows the absolute difference ours − paper *and* the effect sizes. Anywhere else (the synthetic
world, or a model the paper never trained) an absolute difference means nothing, so a block
shows effect sizes only: our difference between methods (each method − Search-R1 in Table 1,
each ablation row − the row above) beside the paper's same difference. Every row label says
whose number it is, on which model and world. A value nobody measured is ``None`` and renders as
"—". See docs/synthetic-study.md for the statistics (calibadv.report.stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from calibadv.report.collect import Results
from calibadv.report.questions import (
    SHARE_METRICS,
    effect_cells,
    has_questions,
    holm_mark,
    level_cells,
    seed_effect,
    share_cells,
    start_point_cells,
)
from calibadv.report.stats import (
    Bounds,
    Interval,
    effect_or_structural_zero,
    fmt_interval,
    interval_label,
    n_label,
    t_interval,
)
from calibadv.workflow.resources import stage_resources
from calibadv.workflow.runs import model_methods, start_model

#: Benchmark keys and the paper's column headers, in the paper's order.
BENCHMARKS = [
    ("nq", "NQ"),
    ("triviaqa", "TriviaQA"),
    ("popqa", "PopQA"),
    ("hotpotqa", "HotpotQA"),
    ("2wikimultihopqa", "2Wiki"),
    ("musique", "MuSiQue"),
    ("bamboogle", "Bamboogle"),
]
SCORE_KEYS = [k for k, _ in BENCHMARKS] + ["average"]
SCORE_HEADERS = [h for _, h in BENCHMARKS] + ["Avg."]
#: the F1 tables' columns: the split average beside F1 pooled over every test question
TABLE_KEYS = SCORE_KEYS + ["pooled"]
TABLE_HEADERS = SCORE_HEADERS + ["Pooled"]
MISSING = "—"
START_POINT_LABEL = "start point (no RL)"  # Table 1's row of the model RL starts from
NOT_IN_PAPER = "not in paper"  # paper cell of a method the paper has no numbers for
WORLDS = {"synthetic": "synthetic world", "real": "wiki-18"}
PAPER_WORLD = "wiki-18"

@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    label_cols: int = 3  # leading text columns (left-aligned); the rest are numbers
    breaks: list[int] = field(default_factory=list)  # row indices preceded by a rule
    notes: list[str] = field(default_factory=list)


Cell = Interval | Bounds | float | str | None


def fmt(value: Cell, digits: int = 2) -> str:
    if isinstance(value, (Interval, Bounds)):
        return fmt_interval(value, digits)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _number(value: Cell) -> float | None:
    if isinstance(value, (Interval, Bounds)):
        return value.mean
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


def diff(ours: Cell, paper: Cell) -> float | None:
    """ours − paper (the mean of ours), or None when either is not a number."""
    a, b = _number(ours), _number(paper)
    return None if a is None or b is None else a - b


def fmt_diff(value: Cell, digits: int = 2) -> str:
    if isinstance(value, (Interval, Bounds)):
        return fmt_interval(value, digits, signed=True)
    return MISSING if value is None else f"{value:+.{digits}f}"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """Whose numbers a block compares: our model and world, the paper's model and world."""

    ours: str  # e.g. "Tiny (synthetic), synthetic world"
    paper: str  # e.g. "Qwen2.5-7B, wiki-18"
    paper_model: str
    same: bool  # the paper's own setting: an absolute difference means something


def paper_model_of(config: dict[str, Any], model: str, paper_models: set[str]) -> str:
    """The paper's model a model's rows sit beside: ``models.<m>.paper_model``, else its label
    when the paper ran a model of that name, else ``report.paper_model``."""
    entry = config["models"][model]
    label = entry.get("label", model)
    if entry.get("paper_model"):
        return entry["paper_model"]
    return label if label in paper_models else config["report"]["paper_model"]


def setting_of(config: dict[str, Any], model: str, paper_model: str) -> Setting:
    label = config["models"][model].get("label", model)
    world = WORLDS.get(config["world"], config["world"])
    same = config["world"] == "real" and label == paper_model
    return Setting(f"{label}, {world}", f"{paper_model}, {PAPER_WORLD}", paper_model, same)


def block(
    labels: list[str],
    setting: Setting,
    ours: dict[str, Cell],
    paper: dict[str, Cell],
    keys: list[str],
    effect: tuple[str, dict[str, Cell], dict[str, Cell]] | None = None,
    digits: int = 2,
    family: str = "average",
) -> list[list[str]]:
    """The rows of one entry: ours (mean ± 95% CI over seeds, n), the paper's, then
    ``Δ ours − paper`` only in the paper's own setting, and the effect rows
    ``(ref, ours, paper)`` when given: our difference from the reference row beside the paper's,
    its label with the p-values of its ``family`` cell (the one the table's Holm family is over)."""
    blank = [""] * len(labels)
    cells = [v for v in ours.values() if isinstance(v, (Interval, Bounds))]
    rows = [
        # counts (Table 7) are not over seeds: no n to show
        [*labels, f"ours: {setting.ours}" + (f" ({interval_label(cells)})" if cells else ""),
         *(fmt(ours.get(k), digits) for k in keys)],
        [*blank, f"paper: {setting.paper}", *(fmt(paper.get(k), digits) for k in keys)],
    ]
    if setting.same:
        rows.append([*blank, "Δ ours − paper (same setting)",
                     *(fmt_diff(diff(ours.get(k), paper.get(k)), digits) for k in keys)])  # fmt: skip
    if effect is not None:
        ref, ours_eff, paper_eff = effect
        eff = [v for v in ours_eff.values() if isinstance(v, (Interval, Bounds))]
        rows.append([*blank, f"effect ours: − {ref} (paired, {interval_label(eff)}{_p_text(ours_eff, family)})",
                     *(fmt_diff(ours_eff.get(k), digits) for k in keys)])  # fmt: skip
        rows.append([*blank, f"effect paper: − {ref}",
                     *(fmt_diff(paper_eff.get(k), digits) for k in keys)])  # fmt: skip
    return rows


#: the names, in an effect row's label, of the cells a table's Holm family can be over
FAMILY_NAMES = {"average": "Avg.", "val_last": "Val F1 last"}


def _p_text(effect: dict[str, Cell], family: str = "average") -> str:
    """``; Avg. p = 0.004, Holm 0.012`` for an effect whose ``family`` cell (Avg. in Tables
    1–4, Val F1 last in Table 9) has a bootstrap p-value (and its Holm-adjusted one, once the
    table's family is adjusted); nothing otherwise."""
    cell = effect.get(family)
    if not isinstance(cell, Bounds) or cell.p is None:
        return ""
    return (f"; {FAMILY_NAMES[family]} p = {cell.p:.3f}"
            + ("" if cell.p_holm is None else f", Holm {cell.p_holm:.3f}"))


# --------------------------------------------------------------------------- our numbers


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


def _model_label(config: dict[str, Any], model: str) -> str:
    return config["models"][model].get("label", model)


# --------------------------------------------------------------------------- F1 tables


def render_blocks(table: Table, entries: list[tuple[Any, ...]], key: str = "average") -> int:
    """Holm over the table's family of effects (the ``key`` cell — the split average — of
    every effect row with a bootstrap p-value, :func:`calibadv.report.questions.holm_mark`),
    then each entry's rows (:func:`block` arguments) after a rule. Returns the family's size,
    for the note."""
    family = holm_mark([e[5][1] for e in entries if len(e) > 5 and e[5] is not None], key)
    for entry in entries:
        table.breaks.append(len(table.rows))
        table.rows += block(*entry, family=key)
    return family


def interval_notes(family: int) -> list[str]:
    """What the F1 tables' intervals are and resample (the row labels say which applies)."""
    notes = [
        "95% intervals, as the row label says: 'n=k' alone = mean ± t(0.975, k−1) s/sqrt(k) over "
        "k RL seeds (no interval at n=1 without per-question results); '2-level bootstrap' = "
        "[2.5%, 97.5%] percentiles of 2000 draws that resample the seeds, then the questions "
        "within each split of each drawn seed (effects: per-question differences paired by seed "
        "and question); 'question bootstrap' = the same at one seed (the questions alone); "
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
    return ([_model_label(config, model), START_POINT_LABEL], setting, {**start, "collapse": None},
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
        out.append(([_model_label(config, model), labels[method]], setting, ours, theirs,
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


# --------------------------------------------------------------------------- Table 5


def table5_judge(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    """Accuracy of "helpful" step scores. The paper: an LLM judge and humans rating steps with
    c > 0. Ours (synthetic world): precision of c > 0 against the gold supporting passages."""
    paper_rows = paper.get("table5_judge", [])
    paper_steps = [int(k[4:]) for k in (paper_rows[0]["accuracy"] if paper_rows else {}) if k.startswith("step")]
    section = config["report"]["proxy"]
    model = section.get("model")
    ours_rows = []
    for method in section.get("rows", {}):
        found = [results.proxy[(model, method, s)] for s in results.seeds(model, method)
                 if (model, method, s) in results.proxy] if model else []  # fmt: skip
        found = [st for st in found if st["overall"].get("has_gold")]
        if found:
            steps_seen = sorted({int(s) for st in found for s in st["per_step"]})
            per = {s: _pooled_precision([st["per_step"][str(s)] for st in found
                                         if str(s) in st["per_step"]]) for s in steps_seen}  # fmt: skip
            overall = _pooled_precision([st["overall"] for st in found])
            name = f"Silver proxy vs gold ({method}" + (f", {n_label([len(found)])})" if len(found) > 1 else ")")
            ours_rows.append((name, per, overall))
    judged = _judge_rows(results, len(section.get("rows", {})) > 1 or len(results.judge) > 1)
    ours_rows += [(name, per, overall) for name, per, overall, _ in judged]
    steps = sorted(set(paper_steps) | {s for _, per, _ in ours_rows for s in per})
    table = Table(
        "table5_judge",
        "Table 5: are steps the proxy scores helpful really helpful? Share judged helpful "
        "(LLM judge, humans) and gold truth, by training step",
        ["Evaluator", "Source", *(f"step {s}" for s in steps), "Avg."],
        label_cols=2,
    )
    for name, per, overall in ours_rows:
        table.rows.append([name, "ours", *(fmt(per.get(s)) for s in steps), fmt(overall)])
    for row in paper_rows:
        acc = row["accuracy"]
        table.rows.append(
            [row["evaluator"], "paper", *(fmt(acc.get(f"step{s}")) for s in steps), fmt(acc.get("average"))]
        )
    table.notes.append(
        "Silver proxy vs gold: precision of c > 0 against the gold passages, the sampled steps "
        "of every seed counted together, with Wilson's 95% interval over the steps (inside "
        "[0, 1]; the mean over seeds alone for proxy files without counts)."
    )
    table.notes.append(
        "No difference row: our evaluators (our judge model, our raters, the gold passages of "
        "the synthetic world) are not the paper's (DeepSeek-V3.2 / the authors' raters); "
        "'—' = not measured at that step."
    )
    for note in {n for *_, notes in judged for n in notes}:
        table.notes.append(note)
    return table


def _pooled_precision(recs: list[dict[str, Any]], key: str = "c_pos_precision") -> Cell:
    """A Table 5 share of several seeds: the counts pooled over the seeds with Wilson's 95%
    interval (``0.80 [0.49, 0.94]``), never a t-interval over seeds (that reads "1.00 ± 0.00"
    at 100%, or leaves [0, 1]); the mean over seeds alone when a file has no counts."""
    from calibadv.shares import wilson

    counts = [(r.get("counts") or {}).get(key) for r in recs]
    if counts and all(counts):
        k, n = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if n:
            low, high = wilson(k, n)
            return f"{k / n:.2f} [{low:.2f}, {high:.2f}]"
    vals = [float(r[key]) for r in recs if r.get(key) is not None]
    return mean(vals) if vals else None


def _judge_rows(results: Results, name_runs: bool) -> list[tuple[str, dict[int, Any], Any, list[str]]]:
    """Rows of our proxy validation (calibadv judge validate): share of the sampled c = 1 steps
    the LLM judge / human raters call helpful and, on the synthetic world, the gold truth of the
    same steps and the judge's and the proxy's agreement with it."""
    out = []
    several_seeds = len({seed for *_, seed in results.judge}) > 1
    for (model, method, seed), summary in sorted(results.judge.items()):
        per_step = {int(s): v for s, v in summary.get("per_step", {}).items()}
        overall = summary.get("overall", {})
        where = (f" ({model}/{method}" + (f", seed {seed}" if several_seeds else "") + ")"
                 if name_runs or several_seeds else "")  # fmt: skip
        label = summary.get("judge_label") or "LLM judge"
        if summary.get("stand_in"):
            label += " — stand-in, not a competent judge"

        def row(name: str, key: str) -> tuple[str, dict[int, Any], Any, list[str]]:
            return (name + where, {s: _share(v, key) for s, v in per_step.items()},
                    _share(overall, key), [])

        out.append(row(f"LLM: {label}", "llm_helpful"))
        if overall.get("llm_unparsable"):
            out.append(row("LLM: share of answers without a verdict (unparsable)",
                           "llm_unparsable_frac"))
        if overall.get("human_labelled"):
            out.append(row("Human (ours)", "human_helpful"))
        if overall.get("has_gold"):
            out.append(row("Gold: retrieved a gold passage", "gold_hit"))
            out.append(row("Gold: advanced a hop", "gold_advanced"))
            out.append(row("LLM agrees with gold (advanced a hop)", "llm_agree_advanced"))
            proxy = ("Silver proxy (c = 1) agrees with gold" if summary.get("min_c", 1) >= 1
                     else f"Silver proxy (c >= {summary.get('min_c'):g}) agrees with gold")
            out.append(row(proxy, "proxy_agree_advanced"))
            if "const_agree_advanced" in overall:
                out.append(row("Baseline: one constant verdict agrees with gold",
                               "const_agree_advanced"))
                out.append(row("LLM vs gold (advanced a hop): Cohen's κ", "llm_kappa_advanced"))
        if overall.get("human_labelled") and "llm_kappa_human" in overall:
            out.append(row("LLM vs humans: Cohen's κ", "llm_kappa_human"))
        verdicts = ", ".join(f"{k}: {v}" for k, v in overall.get("llm_verdicts", {}).items())
        pool = (f"with c >= {summary.get('min_c', 1):g}"
                if summary.get("sample_steps", "scored") == "scored"
                else f"that searched, whatever their c ({overall.get('proxy_scored', 0)} of them "
                     "scored by the proxy)")
        note = (
            f"Proxy validation{where}: {overall.get('n', 0)} sampled steps {pool} "
            f"({summary.get('per_checkpoint')} per checkpoint, seed "
            f"{summary.get('seed')}); judge {summary.get('judge_model')} "
            f"({summary.get('template_version')}): {overall.get('llm_judged', 0)} verdicts "
            f"({verdicts or 'none'}), {overall.get('llm_unparsable', 0)} unparsable, "
            f"{overall.get('llm_failed', 0)} failed; helpful = verdict >= "
            f"{summary.get('helpful_min')}."
            + (" Shares: estimate [95% Wilson interval over the sampled steps]; κ = Cohen's "
               "kappa (0 = chance agreement: a judge that always says 'helpful' reads 0); the "
               "constant baseline says "
               f"'{overall.get('const_verdict', '—')}' every time."
               if "counts" in overall else "")
        )
        out[-1] = (*out[-1][:3], [note])
    return out


def _share(block: dict[str, Any], key: str) -> Cell:
    """A Table 5 cell: the share with its 95% Wilson interval over the sampled steps when the
    summary has its counts (``0.50 [0.15, 0.85]``), else the bare value (kappa, old summaries)."""
    from calibadv.shares import wilson

    k_n = (block.get("counts") or {}).get(key)
    if not k_n or not k_n[1]:
        return block.get(key)
    low, high = wilson(*k_n)
    return f"{k_n[0] / k_n[1]:.2f} [{low:.2f}, {high:.2f}]"


# --------------------------------------------------------------------------- Table 7


_PAPER_DATASET = {
    "hotpotqa": "HotpotQA",
    "2wikimultihopqa": "2WikiMultiHopQA",
    "nq": "NaturalQuestions",
    "triviaqa": "TriviaQA",
    "popqa": "PopQA",
    "musique": "MuSiQue",
    "bamboogle": "Bamboogle",
}


def table7_datasets(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    paper_rows = {r["dataset"]: r for r in paper.get("table7_datasets", [])}
    table = Table(
        "table7_datasets",
        "Table 7: dataset statistics (questions)",
        ["Dataset", "", "Train", "Test"],
        label_cols=2,
    )
    world = WORLDS.get(config["world"], config["world"])
    setting = Setting(world, PAPER_WORLD, "", config["world"] == "real")
    for bench, name in _PAPER_DATASET.items():
        prow = paper_rows.get(name, {})
        ours = {"train": results.train_counts.get(bench), "test": results.test_counts.get(bench)}
        table.breaks.append(len(table.rows))
        table.rows += block([name], setting, ours, {"train": prow.get("train"), "test": prow.get("test")},
                            ["train", "test"], digits=0)  # fmt: skip
    other = {k: v for k, v in results.train_counts.items() if k not in _PAPER_DATASET}
    if other:
        table.notes.append(
            "Our training rows with other data sources: "
            + ", ".join(f"{k} {v}" for k, v in sorted(other.items()))
        )
    table.notes.append("Ours counts the evaluated questions (after data.eval_limit).")
    if not setting.same:
        table.notes.append("No ours − paper row: our questions are not the paper's datasets.")
    return table


# --------------------------------------------------------------------------- Table 8


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
                f"{_model_label(config, model)} / {method}" if first else "", label,
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


# --------------------------------------------------------------------------- Table 9


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
        entries.append(([_model_label(config, model), label], setting, _stress_ours(results, model, method),
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
        "alone, no interval). '—' = a structural zero (both methods exactly 0).",
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
            _model_label(config, model), labels.get(r.method, r.method), str(r.n),
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


TABLES = {
    "table1_main": table1_main,
    "table2_ablation": table2_ablation,
    "table3_proxy": table3_proxy,
    "table4_uniform": table4_uniform,
    "table5_judge": table5_judge,
    "table7_datasets": table7_datasets,
    "table8_figure2_gold": table8_figure2_gold,
    "table9_stress": table9_stress,
    "table9_survival": table9_survival,
}


def build_tables(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> list[Table]:
    return [fn(config, results, paper) for fn in TABLES.values()]
