"""The machinery every table of the paper shares: its columns and labels, the
:class:`Table` of plain rows, a cell's formatting, whose setting a block compares, and the
block of rows of one entry.

Where our runs are in the paper's setting (the real world and a model the paper ran), a block
shows the absolute difference ours − paper *and* the effect sizes. Anywhere else (the synthetic
world, or a model the paper never trained) an absolute difference means nothing, so a block
shows effect sizes only. Every row label says whose number it is, on which model and world. A
value nobody measured is ``None`` and renders as "—".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from calibadv.report.questions import holm_mark
from calibadv.report.stats import Bounds, Interval, fmt_interval, interval_label

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


def model_label(config: dict[str, Any], model: str) -> str:
    return config["models"][model].get("label", model)


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
