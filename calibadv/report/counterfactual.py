"""The counterfactual update's table and figure (calibadv.train.counterfactual's summary.json).

The table: per update count (K), split (held-out: the evidence; in-batch: a mechanism check),
method and step class, the mean Δ log-prob of the steps with its 95% percentile interval from a
bootstrap over questions, and each method's paired difference from the reference (GRPO) on the
same steps with its Holm-adjusted p over the (method, class) family of that K and split; ✓ marks
a difference that survives at 0.05. A class with no step is "—" (nothing to measure).

The figure: one panel per (split, K), Δ per class, one point and interval per method.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from calibadv.evaluate.counterfactual import ALL, CLASSES  # noqa: E402
from calibadv.io import atomic_write_bytes  # noqa: E402
from calibadv.report.render import write_tables  # noqa: E402
from calibadv.report.blocks import Table  # noqa: E402

TABLE_KEY = "table10_counterfactual"
FIGURE_KEY = "counterfactual_update"
SPLITS = ("held-out", "in-batch")
SPLIT_LABEL = {"held-out": "held-out (evidence)", "in-batch": "in-batch (mechanism check)"}
MISSING = "—"


def _ci(b: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``+0.012 [−0.004, +0.030]`` or "—"."""
    if not b:
        return MISSING
    return f"{b['mean']:+.{digits}f} [{b['low']:+.{digits}f}, {b['high']:+.{digits}f}]"


def counterfactual_table(summary: Mapping[str, Any],
                         labels: Mapping[str, str] | None = None) -> Table:
    """Table 10 from the summary (rows in K, split, method, class order)."""
    labels = labels or {}
    cfg = summary["config"]
    ref = labels.get(cfg["reference"], cfg["reference"])
    table = Table(
        key=TABLE_KEY,
        title=("Counterfactual update: Δ mean log-prob of intermediate steps after each "
               "method's update from the start point (95% intervals: bootstrap over questions)"),
        columns=["K", "Steps", "Method", "Class", "n steps (questions)", "Δ log-prob",
                 f"− {ref}", "Holm p", "survives"],
        label_cols=4,
    )
    last = None
    for r in summary["rows"]:
        key = (r["updates"], r["split"])
        if key != last and table.rows:
            table.breaks.append(len(table.rows))
        last = key
        table.rows.append([
            str(r["updates"]), SPLIT_LABEL.get(r["split"], r["split"]),
            labels.get(r["method"], r["method"]), r["cls"],
            f"{r['n_steps']} ({r['n_groups']})" if r["n_steps"] else MISSING,
            _ci(r["delta"]), _ci(r["vs_ref"]),
            MISSING if r["p_holm"] is None else f"{r['p_holm']:.3f}",
            MISSING if r["survives"] is None else ("✓" if r["survives"] else ""),
        ])
    table.notes += _notes(summary, ref)
    return table


def _notes(summary: Mapping[str, Any], ref: str) -> list[str]:
    cfg, counts = summary["config"], summary["counts"]
    held, batch = counts["held-out"], counts["in-batch"]
    return [
        f"One batch of {cfg['questions']} training questions × G = {cfg['group_size']} "
        f"sampled once from the start point; each method's update applied from identical "
        f"parameters, a fresh optimiser and the same seeds, K times on that batch "
        f"({cfg['mini_batches']} AdamW steps per update; the trainer's own update code).",
        f"Held-out: {held['rollouts']} rollouts ({cfg['dev_samples']} sampled per question) on "
        f"{held['questions']} validation questions with a step, {held['steps']} intermediate "
        f"steps ({held['gold_steps']} hit gold; {held['right_rollouts']} rollouts answered "
        f"right, exact match), teacher-forced before and after. In-batch: {batch['steps']} "
        "steps of the updated batch; it follows largely by construction (the advantage acts on "
        "exactly those tokens): a check that the code does what it says, not evidence.",
        f"'− {ref}': the paired difference on the same steps; Holm over each (K, steps) "
        "family of method × class differences, ✓ where the adjusted p ≤ 0.05 (a two-sided "
        "bootstrap p). '—': no step of that class (a structural zero), or the reference.",
        f"All rollouts use the {cfg['sample_method']} prompt; each method scores them with its "
        "own format rules.",
    ]


def counterfactual_figure(summary: Mapping[str, Any],
                          labels: Mapping[str, str] | None = None) -> Any:
    """Panels (split × K): Δ log-prob per class, a point and 95% bootstrap interval per method."""
    labels = labels or {}
    ks = summary["config"]["updates"]
    methods = summary["methods"]
    classes = [ALL, *CLASSES]
    fig, axes = plt.subplots(len(SPLITS), len(ks), figsize=(4.5 * len(ks), 7), squeeze=False,
                             sharey="row")
    for i, split in enumerate(SPLITS):
        for j, k in enumerate(ks):
            ax = axes[i][j]
            rows = {(r["method"], r["cls"]): r for r in summary["rows"]
                    if r["updates"] == k and r["split"] == split}
            _panel(ax, rows, methods, classes, labels)
            ax.set_title(f"{SPLIT_LABEL[split]}, K = {k}", fontsize=10)
    axes[0][0].set_ylabel("Δ mean step log-prob")
    axes[1][0].set_ylabel("Δ mean step log-prob")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("Counterfactual update from the start point (bars: 95% bootstrap interval "
                 "over questions)", fontsize=10)
    fig.tight_layout()
    return fig


def _panel(ax: Any, rows: Mapping[tuple[str, str], Any], methods: Sequence[str],
           classes: Sequence[str], labels: Mapping[str, str]) -> None:
    width = 0.8 / max(1, len(methods))
    for m_i, method in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for c_i, cls in enumerate(classes):
            d = (rows.get((method, cls)) or {}).get("delta")
            if d:
                xs.append(c_i - 0.4 + width * (m_i + 0.5))
                ys.append(d["mean"])
                lo.append(d["mean"] - d["low"])
                hi.append(d["high"] - d["mean"])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=2, ms=4,
                    label=labels.get(method, method))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([c.replace(", ", ",\n") for c in classes], fontsize=8)


def write_counterfactual(summary_path: str | Path, tables_dir: str | Path,
                         figure_path: str | Path, formats: Sequence[str],
                         labels: Mapping[str, str] | None = None) -> list[Path]:
    """Table 10 in ``formats`` and the figure (PNG) from ``summary_path``."""
    import io

    summary = json.loads(Path(summary_path).read_text())
    written = write_tables([counterfactual_table(summary, labels)], tables_dir, list(formats))
    fig = counterfactual_figure(summary, labels)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    written.append(atomic_write_bytes(Path(figure_path), buf.getvalue()))
    return written
