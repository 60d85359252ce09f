"""Training-dynamics figures (paper Figures 2, 3, 5, 6, 7, 8, 9) from metrics.jsonl / val.jsonl.

Each figure function takes the collected :class:`Results` and the config and returns a
matplotlib figure; a figure whose signal no configured run logged says so on its canvas
rather than being left out, so the report always has the same set of files. A run of several
seeds is drawn as the mean over its seeds with a band: the 95% t-interval at each step
(calibadv.report.stats.band; one seed draws a plain line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from calibadv.report.collect import Results  # noqa: E402
from calibadv.report.figure2_gold import FIGURE2_ROWS, figure2_seed_values  # noqa: E402
from calibadv.report.scores import seed_scores  # noqa: E402
from calibadv.report.stats import band  # noqa: E402
from calibadv.report.survival import km_figure  # noqa: E402

#: (metrics.jsonl key, panel title) of the training-dynamics grid (paper Figures 3 and 5).
DYNAMICS = [
    ("entropy", "Entropy"),
    ("token_prob_mean", "Mean token probability"),
    ("ppl_mean", "Perplexity"),
    ("negpos_ratio_after", "Neg/pos advantage ratio"),
    ("c_mean", "Mean c"),
    ("high_ppl_ratio", "High-PPL ratio"),
    ("f1_mean", "Training F1"),
    ("format_rate", "Format-valid rate"),
    ("valid_searches_mean", "Valid searches / rollout"),
]


def run_label(config: dict[str, Any], model: str, method: str, results: Results) -> str:
    """``Model / method (n=3)``: one line per (model, method), its seeds pooled."""
    n = len(results.seeds(model, method))
    return f"{config['models'][model].get('label', model)} / {method}" + (f" (n={n})" if n > 1 else "")


def metrics_frame(results: Results, config: dict[str, Any]) -> pd.DataFrame:
    """Long table of every run's per-step metrics: run (seeds pooled), seed, step, signal, value."""
    rows = []
    for (model, method, seed), run in results.runs.items():
        label = run_label(config, model, method, results)
        for rec in run.metrics:
            for key, value in rec.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({"run": label, "method": method, "seed": seed, "step": rec.get("step"),
                                 "signal": key, "value": value})  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "method", "seed", "step", "signal", "value"])


def _empty(ax: plt.Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", wrap=True, fontsize=9)
    ax.set_axis_off()


def smoothed(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Each (run, seed, signal) series replaced by its centred moving mean over ``window`` steps
    (fewer at the ends). A batch statistic of a few questions moves more from step to step than
    over the run; over a window of one pass over the RL questions (the tiny config's 7 steps)
    every point averages the same questions, so a trend is not the draw of the step's batch."""
    if window <= 1 or frame.empty:
        return frame
    out = frame.sort_values("step").copy()
    out["value"] = out.groupby(["run", "seed", "signal"], sort=False)["value"].transform(
        lambda v: v.rolling(window, center=True, min_periods=1).mean())
    return out.sort_index()


def _lines(ax: plt.Axes, frame: pd.DataFrame, signal: str, title: str, smooth: int = 1) -> None:
    """Mean over seeds per step with its band; with ``smooth > 1`` the per-step line is drawn
    faint and the moving mean over ``smooth`` steps (:func:`smoothed`) on top of it."""
    data = frame[frame.signal == signal]
    if data.empty:
        _empty(ax, f"no run logged `{signal}`")
    elif smooth <= 1:
        sns.lineplot(data=data, x="step", y="value", hue="run", ax=ax, marker="o", markersize=3,
                     estimator="mean", errorbar=band)  # fmt: skip
        ax.legend(fontsize=6)
    else:
        sns.lineplot(data=data, x="step", y="value", hue="run", ax=ax, marker="o", markersize=2,
                     estimator="mean", errorbar=None, alpha=0.3, legend=False)  # fmt: skip
        sns.lineplot(data=smoothed(data, smooth), x="step", y="value", hue="run", ax=ax,
                     estimator="mean", errorbar=band, linewidth=2)  # fmt: skip
        ax.legend(fontsize=6)
    ax.set_title(title if smooth <= 1 else f"{title} (faint: per step; line: {smooth}-step mean)",
                 fontsize=9)  # fmt: skip


def training_dynamics(results: Results, config: dict[str, Any]) -> plt.Figure:
    frame = metrics_frame(results, config)
    smooth = config["report"]["smooth_steps"]
    fig, axes = plt.subplots(3, 3, figsize=(14, 10))
    for ax, (signal, title) in zip(axes.flat, DYNAMICS):
        _lines(ax, frame, signal, title, smooth)
    fig.suptitle("Training dynamics per run (paper Figures 3 and 5): mean over seeds, "
                 + band_caption(results))
    fig.tight_layout()
    return fig


def _single(signal: str, title: str, ylabel: str, reference: Callable[[plt.Axes], None] | None = None):
    def draw(results: Results, config: dict[str, Any]) -> plt.Figure:
        frame = metrics_frame(results, config)
        fig, ax = plt.subplots(figsize=(7, 4))
        _lines(ax, frame, signal, title, config["report"]["smooth_steps"])
        ax.set_title(f"{ax.get_title()}\nmean over seeds, {band_caption(results)}", fontsize=9)
        if not frame[frame.signal == signal].empty:
            ax.set_ylabel(ylabel)
            if reference:
                reference(ax)
        fig.tight_layout()
        return fig

    return draw


#: The paper's Figure 2 (Qwen2.5-7B, wiki-18): penalised steps with c = 1 (config/paper_results.yaml).
PAPER_C1_PCT = 43.97


def _c1_reference(ax: plt.Axes) -> None:
    ax.axhline(PAPER_C1_PCT / 100, ls="--", color="grey", lw=1, label=f"paper (Qwen2.5-7B): {PAPER_C1_PCT}%")
    ax.legend(fontsize=6)


def _empty_silver_reference(ax: plt.Axes) -> None:
    ax.axhspan(0.25, 0.30, color="grey", alpha=0.2, label="paper: 25–30%")
    ax.legend(fontsize=6)


penalised_c1 = _single(
    "penalised_c1_frac",
    "Penalised intermediate steps that are likely correct (c = 1) — paper Figure 2",
    "fraction of penalised steps",
    _c1_reference,
)
empty_silver = _single(
    "empty_silver_frac",
    "Groups with an empty silver set — paper Figure 8",
    "fraction of groups",
    _empty_silver_reference,
)
softpen_share = _single(
    "softpen_frac",
    "Intermediate steps changed by the soft penalty — paper Figure 9",
    "fraction of intermediate steps",
)


def c_distribution(results: Results, config: dict[str, Any]) -> plt.Figure:
    """Share of scored steps per c bucket, averaged over logged steps, per run (Figure 7)."""
    rows = []
    for (model, method, seed), run in results.runs.items():
        hists = [r["c_hist"] for r in run.metrics if isinstance(r.get("c_hist"), dict) and r["c_hist"]]
        if not hists:
            continue
        for bucket in sorted({b for h in hists for b in h}, key=_bucket_value):
            share = sum(h.get(bucket, 0.0) for h in hists) / len(hists)
            rows.append({"run": run_label(config, model, method, results), "seed": seed,
                         "c": bucket, "share": share})  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    if not rows:
        _empty(ax, "no run logged `c_hist` (methods without a step score)")
    else:
        sns.barplot(data=pd.DataFrame(rows), x="c", y="share", hue="run", ax=ax, errorbar=band)
        ax.set_ylabel("share of scored steps")
        ax.legend(fontsize=6)
    ax.set_title("Distribution of the step score c — paper Figure 7\nmean over logged steps and "
                 f"seeds, {band_caption(results).replace('band', 'bars')}", fontsize=9)
    fig.tight_layout()
    return fig


def _bucket_value(label: str) -> float:
    num, _, den = label.partition("/")
    return float(num) / float(den or 1)


def alpha_sweep(results: Results, config: dict[str, Any]) -> plt.Figure:
    """Validation F1 over training for each rebalance α (left) and final average F1 (right)."""
    sweep = config["report"]["alpha_sweep"]
    curves, finals = [], []
    for (model, method, seed), run in results.runs.items():
        if method not in sweep:
            continue
        alpha = sweep[method]
        for rec in run.val:
            if rec.get("f1") is not None:
                curves.append({"alpha": f"α = {alpha:g}", "step": rec["step"], "f1": 100 * rec["f1"]})
        avg = seed_scores(results, model, method).get("average", {}).get(seed)
        if avg is not None:
            finals.append({"alpha": alpha, "f1": avg, "model": config["models"][model].get("label", model)})
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    if curves:
        sns.lineplot(data=pd.DataFrame(curves), x="step", y="f1", hue="alpha", ax=left, marker="o",
                     errorbar=band)  # fmt: skip
        left.set_ylabel("validation F1 ×100")
    else:
        _empty(left, "no α-sweep run (report.alpha_sweep) has a validation curve")
    if finals:
        sns.lineplot(data=pd.DataFrame(finals), x="alpha", y="f1", hue="model", ax=right, marker="o",
                     errorbar=band)  # fmt: skip
        right.set_ylabel("average test F1 ×100")
    else:
        _empty(right, "no α-sweep run was evaluated on every benchmark")
    fig.suptitle("Answer-step rebalance coefficient α — paper Figure 6: mean over seeds, "
                 + band_caption(results))
    fig.tight_layout()
    return fig


def figure2_gold(results: Results, config: dict[str, Any]) -> plt.Figure:
    """Paper Figure 2 against gold, per dumped step: the share of penalised steps that retrieved
    a gold passage beside the share the proxy calls c = 1 (left), the proxy's precision and
    recall against gold (middle), the neg/pos advantage ratio before/after rebalancing (right)."""
    rows = []
    for model in config["models"]:
        for method in {x for m, x, _ in results.runs if m == model}:
            label = run_label(config, model, method, results)
            for key, _, _ in FIGURE2_ROWS:
                for step, values in figure2_seed_values(results, model, method).get(key, {}).items():
                    rows += [{"run": label, "quantity": key, "step": step, "value": v} for v in values]
    frame = pd.DataFrame(rows, columns=["run", "quantity", "step", "value"])
    panels = [
        (("gold_frac_all", "c1_frac"), "penalised steps (%): retrieved gold vs proxy c = 1", "%"),
        (("c1_precision", "c1_recall"), "proxy c = 1 against gold (%)", "%"),
        (("negpos_ratio_before", "negpos_ratio_after"), "neg/pos advantage ratio", "ratio"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (keys, title, ylabel) in zip(axes, panels):
        data = frame[frame.quantity.isin(keys)]
        if data.empty:
            _empty(ax, f"no run has {' or '.join(keys)} (no proxy statistics from proxy.methods, "
                   "or no penalised step they are defined on)")
        else:
            sns.lineplot(data=data, x="step", y="value", hue="run", style="quantity", ax=ax,
                         marker="o", markersize=4, errorbar=band)  # fmt: skip
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=6)
        ax.set_title(title, fontsize=9)
    c1 = PAPER_C1_PCT
    if not frame[frame.quantity == "c1_frac"].empty:
        axes[0].axhline(c1, ls="--", color="grey", lw=1)
        axes[0].text(0.01, c1, "paper c = 1 (Qwen2.5-7B, wiki-18)", fontsize=6, color="grey",
                     transform=axes[0].get_yaxis_transform(), va="bottom")  # fmt: skip
    fig.suptitle("Paper Figure 2 against gold (synthetic world): mean over seeds, "
                 + band_caption(results))
    fig.tight_layout()
    return fig


def band_caption(results: Results) -> str:
    """What a figure's band is: the 95% t-interval over seeds, or none at one seed (the band is
    then the line itself: calibadv.report.stats.band), so a title never promises an interval
    that is not drawn."""
    ns = {len(results.seeds(m, x)) for m, x, _ in results.runs}
    if not ns or max(ns) <= 1:
        return "one seed: no band"
    return "band = 95% t-interval over seeds" + (" (none where n = 1)" if min(ns) <= 1 else "")


FIGURES: dict[str, Callable[[Results, dict[str, Any]], plt.Figure]] = {
    "training_dynamics": training_dynamics,
    "penalised_c1": penalised_c1,
    "alpha_sweep": alpha_sweep,
    "c_distribution": c_distribution,
    "empty_silver": empty_silver,
    "softpen_share": softpen_share,
    "figure2_gold": figure2_gold,
    "collapse_km": km_figure,
}


def write_figures(results: Results, config: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Draw every figure to ``OUT_DIR/<name>.png`` (written to a temporary name, then moved)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    written = []
    for name, draw in FIGURES.items():
        fig = draw(results, config)
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        tmp.replace(out / f"{name}.png")
        written.append(out / f"{name}.png")
    return written
