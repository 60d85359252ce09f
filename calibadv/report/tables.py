"""The paper's tables as plain rows: for every entry, our value, the paper's, and the
difference (ours − paper). A value nobody measured is ``None`` and renders as "—"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from calibadv.report.collect import Results
from calibadv.workflow_config import model_methods, stage_resources

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
MISSING = "—"
NOT_IN_PAPER = "not in paper"  # paper cell of a method the paper has no numbers for

Value = float | str | None


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    label_cols: int = 3  # leading text columns (left-aligned); the rest are numbers
    breaks: list[int] = field(default_factory=list)  # row indices preceded by a rule
    notes: list[str] = field(default_factory=list)


def fmt(value: Value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def diff(ours: Value, paper: Value) -> float | None:
    if isinstance(ours, (int, float)) and isinstance(paper, (int, float)):
        return float(ours) - float(paper)
    return None


def fmt_diff(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:+.{digits}f}"


def triplet(
    labels: list[str], ours: dict[str, Value], paper: dict[str, Value], keys: list[str], digits: int = 2
) -> list[list[str]]:
    """Three rows: ours, paper, ours − paper (labels only on the first)."""
    blank = [""] * len(labels)
    return [
        [*labels, "ours", *(fmt(ours.get(k), digits) for k in keys)],
        [*blank, "paper", *(fmt(paper.get(k), digits) for k in keys)],
        [*blank, "Δ", *(fmt_diff(diff(ours.get(k), paper.get(k)), digits) for k in keys)],
    ]


def our_scores(results: Results, model: str, method: str, metric: str = "f1") -> dict[str, Value]:
    """×100 scores per benchmark, plus the average when every paper benchmark is present."""
    out: dict[str, Value] = {}
    for bench, _ in BENCHMARKS:
        found = results.evals.get((model, method, bench))
        if found is not None and found.get(metric) is not None:
            out[bench] = 100.0 * float(found[metric])
    values = [out[b] for b, _ in BENCHMARKS if b in out]
    if len(values) == len(BENCHMARKS):
        out["average"] = mean(values)  # type: ignore[arg-type]
    return out


def collapse_label(results: Results, model: str, method: str) -> str | None:
    run = results.runs.get((model, method))
    if run is None or run.selection is None:
        return None
    step = run.selection.get("collapse_step")
    total = (run.done or {}).get("steps")
    if step is None:
        return "none"
    return f"{step}/{total}" if total is not None else str(step)


def time_per_step(results: Results, model: str, method: str) -> float | None:
    run = results.runs.get((model, method))
    times = [float(r["time_s"]) for r in (run.metrics if run else []) if r.get("time_s") is not None]
    return mean(times) if times else None


def _model_label(config: dict[str, Any], model: str) -> str:
    return config["models"][model].get("label", model)


def _paper_rows(paper: list[dict[str, Any]], key: str, **match: str) -> dict[str, dict[str, Any]]:
    return {
        row[key]: row for row in paper if all(row.get(k) == v for k, v in match.items())
    }


# --------------------------------------------------------------------------- Table 1


def table1_main(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> Table:
    labels = config["report"]["method_labels"]
    keys = SCORE_KEYS + ["collapse"]
    table = Table(
        "table1_main",
        "Table 1: main results (F1 ×100) and collapse point (step / total)",
        ["Model", "Method", "", *SCORE_HEADERS, "Collapse"],
    )
    paper_rows = {(r["model"], r["method"]): r for r in paper.get("table1_main", [])}
    paper_methods = {r["method"] for r in paper.get("table1_main", [])}
    seen = set()
    for model in config["models"]:
        for method in model_methods(config, model):
            if method not in labels:
                continue
            key = (_model_label(config, model), labels[method])
            seen.add(key)
            ours = {**our_scores(results, model, method), "collapse": collapse_label(results, model, method)}
            prow = paper_rows.get(key, {})
            theirs = {**prow.get("scores", {}), "collapse": prow.get("collapse_point")}
            if labels[method] not in paper_methods:  # a row of ours (e.g. SAPO): say so
                theirs = dict.fromkeys(keys, NOT_IN_PAPER)
            table.breaks.append(len(table.rows))
            table.rows += triplet(list(key), ours, theirs, keys)
    for key, prow in paper_rows.items():
        if key in seen:
            continue
        table.breaks.append(len(table.rows))
        table.rows += triplet(list(key), {}, {**prow["scores"], "collapse": prow.get("collapse_point")}, keys)
    table.notes.append(
        "Rows pair our run with the paper's by model label and method label "
        "(config report.method_labels); '—' = not run / not reported; "
        f"'{NOT_IN_PAPER}' = a method the paper never ran (rows of ours, e.g. SAPO)."
    )
    return table


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
    """Rows per configured variant (our method -> paper label) and per metric."""
    model = section.get("model")
    cols = ["Variant", "Metric", "", *SCORE_HEADERS, *(h for _, h in extra)]
    table = Table(key, title, cols)
    if model is None:
        table.notes.append("No model configured for this table (report.<table>.model).")
        model_label = None
    else:
        model_label = _model_label(config, model)
    for method, label in section.get("rows", {}).items():
        for metric, paper_metric in metrics:
            prow = next(
                (
                    r
                    for r in paper_rows
                    if r.get("variant") == label and r.get("metric", paper_metric) == paper_metric
                ),
                {},
            )
            run = model is not None and method in model_methods(config, model)
            ours = our_scores(results, model, method, metric) if run else {}
            theirs = dict(prow.get("scores", {}))
            for ekey, _ in extra:
                ours[ekey] = _extra_value(ekey, config, results, model, method) if run else None
                theirs[ekey] = prow.get(ekey)
            table.breaks.append(len(table.rows))
            table.rows += triplet([label, paper_metric], ours, theirs, SCORE_KEYS + [k for k, _ in extra])
    if model_label:
        table.notes.append(f"Our runs: model {model_label}; paper: {paper_rows[0]['model'] if paper_rows else '—'}.")
    return table


def _extra_value(key: str, config: dict[str, Any], results: Results, model: str, method: str) -> Value:
    if key == "time_per_step_s":
        return time_per_step(results, model, method)
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
        extra=[("time_per_step_s", "s/step"), ("gpus", "GPUs")],
    )
    table.notes.append("Time per step: mean `time_s` of metrics.jsonl (our hardware, not H20s).")
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
        stats = results.proxy.get((model, method)) if model else None
        if stats and stats["overall"].get("has_gold"):
            per = {int(s): v.get("c_pos_precision") for s, v in stats["per_step"].items()}
            ours_rows.append((f"Silver proxy vs gold ({method})", per, stats["overall"].get("c_pos_precision")))
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
        "No difference row: our evaluators (our judge model, our raters, the gold passages of "
        "the synthetic world) are not the paper's (DeepSeek-V3.2 / the authors' raters); "
        "'—' = not measured at that step."
    )
    for note in {n for *_, notes in judged for n in notes}:
        table.notes.append(note)
    return table


def _judge_rows(results: Results, name_runs: bool) -> list[tuple[str, dict[int, Any], Any, list[str]]]:
    """Rows of our proxy validation (calibadv judge validate): share of the sampled c = 1 steps
    the LLM judge / human raters call helpful and, on the synthetic world, the gold truth of the
    same steps and the judge's and the proxy's agreement with it."""
    out = []
    for (model, method), summary in sorted(results.judge.items()):
        per_step = {int(s): v for s, v in summary.get("per_step", {}).items()}
        overall = summary.get("overall", {})
        where = f" ({model}/{method})" if name_runs else ""
        label = summary.get("judge_label") or "LLM judge"
        if summary.get("stand_in"):
            label += " — stand-in, not a competent judge"

        def row(name: str, key: str) -> tuple[str, dict[int, Any], Any, list[str]]:
            return (name + where, {s: v.get(key) for s, v in per_step.items()}, overall.get(key), [])

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
        )
        out[-1] = (*out[-1][:3], [note])
    return out


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
    for bench, name in _PAPER_DATASET.items():
        prow = paper_rows.get(name, {})
        ours = {"train": results.train_counts.get(bench), "test": results.test_counts.get(bench)}
        table.breaks.append(len(table.rows))
        table.rows += triplet([name], ours, {"train": prow.get("train"), "test": prow.get("test")}, ["train", "test"], 0)
    other = {k: v for k, v in results.train_counts.items() if k not in _PAPER_DATASET}
    if other:
        table.notes.append(
            "Our training rows with other data sources: "
            + ", ".join(f"{k} {v}" for k, v in sorted(other.items()))
        )
    table.notes.append("Ours counts the evaluated questions (after data.eval_limit).")
    return table


TABLES = {
    "table1_main": table1_main,
    "table2_ablation": table2_ablation,
    "table3_proxy": table3_proxy,
    "table4_uniform": table4_uniform,
    "table5_judge": table5_judge,
    "table7_datasets": table7_datasets,
}


def build_tables(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> list[Table]:
    return [fn(config, results, paper) for fn in TABLES.values()]
