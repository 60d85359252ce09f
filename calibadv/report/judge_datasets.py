"""Table 5 (are the steps the proxy scores helpful really helpful: our gold precision and
proxy validation beside the paper's LLM judge and raters) and Table 7 (dataset statistics).
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from calibadv.report.blocks import PAPER_WORLD, WORLDS, Cell, Setting, Table, block, fmt
from calibadv.report.collect import Results
from calibadv.report.stats import n_label


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
