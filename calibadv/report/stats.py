"""Aggregation over seeds: the mean with a 95% t-interval, and effect sizes between methods.

Every number of a table that comes from training runs is a statistic over the RL seeds of one
(model, method): the mean and the half-width of the two-sided 95% Student-t interval
``mean ± t_{0.975, n-1} · s / √n`` (``s`` the sample standard deviation, n the seeds). With one
seed there is no interval, and the table says so (``n=1``) rather than print ± 0.

An *effect* is a difference between two methods of the same model (CalibAdv − Search-R1; an
ablation row − the row above). Runs with the same seed see the same questions in the same order
(the seed drives the data order), so the effect is paired: the t-interval of the per-seed
differences over the seeds both methods ran. Effects are comparable across worlds and models
where absolute scores are not: a 1M-parameter model on invented questions and Qwen2.5-7B on
Wikipedia share a sign and a rough size of an improvement, never a score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and the half-width of their t-interval (None when n < 2)."""

    mean: float
    half: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half


@dataclass(frozen=True)
class Bounds:
    """An estimate with an interval that need not be symmetric: a percentile bootstrap (F1
    levels and effects, :func:`calibadv.evaluate.intervals.split_bootstrap`) or Wilson's
    interval of a share. ``n`` is the number of seeds it rests on; ``how`` what the interval
    resamples (``bootstrap``: seeds, then questions; ``seeds``: the seeds alone, one number per
    run; ``wilson``: a pooled count); ``p`` the bootstrap's two-sided p-value of 0 and
    ``p_holm`` its Holm-adjusted value where the cell is in a table's family of effects;
    ``mark`` (``†``) says the effect survives Holm."""

    mean: float
    low: float | None
    high: float | None
    n: int
    how: str = "bootstrap"
    p: float | None = None
    p_holm: float | None = None
    mark: str = ""


def fmt_bounds(b: Bounds, digits: int = 2, signed: bool = False) -> str:
    """``+20.00 [+10.00, +30.00]†`` (signed, for effects) or ``55.0 [34.2, 74.2]``; the mean
    alone when there are no bounds."""
    f = f"{'+' if signed else ''}.{digits}f"
    text = f"{b.mean:{f}}"
    if b.low is not None and b.high is not None:
        text += f" [{b.low:{f}}, {b.high:{f}}]"
    return text + b.mark


def t_quantile(df: int, level: float = LEVEL) -> float:
    """Two-sided Student-t critical value: t_{(1+level)/2, df}."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, df))


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean and t-interval half-width of ``values`` (None for no values; no half for one)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return None
    mean = math.fsum(vals) / n
    if n == 1:
        return Interval(mean, None, 1)
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return Interval(mean, t_quantile(n - 1, level) * math.sqrt(var / n), n)


def paired_effect(
    ours: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL
) -> Interval | None:
    """t-interval of ``ours[s] − reference[s]`` over the seeds s both have (None if none)."""
    seeds = sorted(set(ours) & set(reference))
    return t_interval([float(ours[s]) - float(reference[s]) for s in seeds], level)


def effect_or_structural_zero(
    ours: Mapping[int, float], reference: Mapping[int, float], level: float = LEVEL
) -> Interval | None:
    """:func:`paired_effect`, except None ("—") when every value of both methods is exactly 0:
    a *structural* zero (e.g. a High-PPL ratio the tiny model never leaves 0 on), which has
    nothing to measure and must not read as "+0.00" beside the paper's effect."""
    seeds = set(ours) & set(reference)
    if seeds and all(float(ours[s]) == 0.0 == float(reference[s]) for s in seeds):
        return None
    return paired_effect(ours, reference, level)


def band(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of the t-interval, for seaborn's ``errorbar=``; no band (low = high = mean)
    with one value, so a single seed draws a plain line."""
    iv = t_interval(values)
    if iv is None:
        return (math.nan, math.nan)
    if iv.half is None:
        return (iv.mean, iv.mean)
    return (iv.mean - iv.half, iv.mean + iv.half)


def fmt_interval(iv: Interval | Bounds | None, digits: int = 2, signed: bool = False) -> str:
    """``12.34 ± 1.05`` (n ≥ 2) or ``12.34`` (n = 1; the row label carries ``n=1, no interval``);
    a :class:`Bounds` as ``12.34 [11.02, 13.60]``; ``—`` for nothing measured."""
    if iv is None:
        return "—"
    if isinstance(iv, Bounds):
        return fmt_bounds(iv, digits, signed)
    sign = "+" if signed else ""
    text = f"{iv.mean:{sign}.{digits}f}"
    return text if iv.half is None else f"{text} ± {iv.half:.{digits}f}"


def n_label(ns: Sequence[int]) -> str:
    """What a row's intervals rest on: ``n=3`` or ``n=1, no interval`` (``n=2–3`` when cells
    differ, e.g. a benchmark one seed did not reach)."""
    ns = sorted({n for n in ns if n})
    if not ns:
        return "n=0"
    text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
    return text + (", no interval" if ns[-1] == 1 else "")


def interval_label(cells: Sequence[object]) -> str:
    """What a row's intervals rest on and resample: ``n=3`` (t over seeds, as
    :func:`n_label`), ``n=3; 2-level bootstrap``, ``n=1; question bootstrap``, ``n=3; seed
    bootstrap`` (one number per run, :func:`calibadv.report.questions.seed_effect`) or ``n=3;
    Wilson, questions pooled over seeds``, joined with ``+`` when a row has several; "mixed"
    when the row's cells differ (some evaluations without per-question results)."""
    ts = [c.n for c in cells if isinstance(c, Interval)]
    bs = [c for c in cells if isinstance(c, Bounds)]
    if not bs:
        return n_label(ts)
    ns = sorted({c.n for c in bs} | set(ts))
    text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
    names = {"bootstrap": "question bootstrap" if max(ns) == 1 else "2-level bootstrap",
             "seeds": "seed bootstrap", "wilson": "Wilson, questions pooled over seeds"}
    hows = {c.how for c in bs}
    if hows != {"wilson"}:
        hows.discard("wilson")  # a bootstrap row's shares: the note says they are Wilson's
    how = " + ".join(names[h] for h in names if h in hows)
    return f"{text}; {how}" + ("; mixed with t over seeds" if ts else "")
