"""Intervals and tests a reviewer can check by hand: shares, resampling, families, survival.

Every function says what it resamples or assumes, so a table can print it in its note:

- shares (a count out of n) get Wilson's score interval (:func:`calibadv.shares.wilson`, the
  one implementation, re-exported here) or the exact Clopper–Pearson one, both inside [0, 1]
  by construction (a t-interval on 0/1 values is not: "97.9 ± 9.0");
- :func:`cluster_bootstrap` resamples *groups* (questions) with replacement, so units that share
  a question (the steps of its rollouts) move together; :func:`two_level_bootstrap` resamples
  seeds, then questions within each drawn seed;
- :func:`holm` adjusts a family of p-values (Holm 1979: step-down Bonferroni), marking which
  effects survive at the family-wise level;
- :func:`kaplan_meier` and :func:`logrank` treat collapse as time-to-event: a run that never
  collapsed is censored at its last validated step, not counted as "collapsed at the end".

numpy and scipy are imported inside the functions: the module is cheap to import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from calibadv.shares import wilson

LEVEL = 0.95


# --------------------------------------------------------------------------- shares
def _check_share(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a share needs 0 <= k <= n, got k={k}, n={n}")


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """The exact (Clopper–Pearson) interval of k/n from beta quantiles, in [0, 1]; 0 and 1 are
    the bounds at k = 0 and k = n (None for n = 0)."""
    _check_share(k, n)
    if n == 0:
        return None
    from scipy.stats import beta

    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def fmt_share(k: int, n: int, digits: int = 1, method: str = "wilson") -> str:
    """``45.0 [33.1, 57.5]`` in percent, the interval Wilson's (or ``exact``: Clopper–Pearson);
    ``—`` for n = 0 (nothing to share)."""
    iv = wilson(k, n) if method == "wilson" else clopper_pearson(k, n)
    if iv is None:
        return "—"
    return f"{100 * k / n:.{digits}f} [{100 * iv[0]:.{digits}f}, {100 * iv[1]:.{digits}f}]"


# --------------------------------------------------------------------------- resampling
@dataclass(frozen=True)
class Boot:
    """A point estimate, its percentile bootstrap interval, a two-sided bootstrap p-value for
    "the mean is 0" and the number of resampled units (groups)."""

    mean: float
    low: float
    high: float
    p: float
    n_groups: int


def _boot_p(draws: Sequence[float]) -> float:
    """Two-sided bootstrap p-value of 0: twice the smaller tail share of the draws (≤ 1), with
    the +1 correction so a finite number of draws never gives p = 0."""
    n = len(draws)
    below = sum(1 for d in draws if d <= 0)
    above = sum(1 for d in draws if d >= 0)
    return min(1.0, 2 * (min(below, above) + 1) / (n + 1))


def cluster_bootstrap(groups: Mapping[object, Sequence[float]], reps: int = 2000,
                      seed: int = 0, level: float = LEVEL) -> Boot | None:
    """Mean over all units, with the percentile interval from resampling *groups* with
    replacement (each draw: as many groups as there are, every unit of a drawn group in).

    Units of one group (the steps of one question's rollouts) are not independent; resampling
    the groups keeps that dependence. None when no group has a unit."""
    import numpy as np

    keys = [g for g, v in groups.items() if len(v)]
    if not keys:
        return None
    sums = np.array([math.fsum(groups[g]) for g in keys])
    counts = np.array([len(groups[g]) for g in keys], dtype=float)
    mean = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(keys), size=(reps, len(keys)))
    draws = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    a = (1 - level) / 2
    low, high = np.quantile(draws, [a, 1 - a])
    return Boot(mean, float(low), float(high), _boot_p(draws.tolist()), len(keys))


def two_level_bootstrap(seeds: Mapping[object, Mapping[object, float]], reps: int = 2000,
                        seed: int = 0, level: float = LEVEL) -> Boot | None:
    """Mean of per-seed means of per-question values (e.g. paired F1 differences), with the
    interval from resampling seeds, then questions within each drawn seed.

    At one seed it is the question bootstrap alone (what a single run can say); the seed level
    adds the spread between runs that a question bootstrap cannot see."""
    import numpy as np

    per_seed = [np.array(list(q.values()), dtype=float) for q in seeds.values() if len(q)]
    if not per_seed:
        return None
    mean = float(np.mean([v.mean() for v in per_seed]))
    rng = np.random.default_rng(seed)
    draws = np.empty(reps)
    for r in range(reps):
        picks = rng.integers(0, len(per_seed), size=len(per_seed))
        draws[r] = np.mean([per_seed[s][rng.integers(0, len(per_seed[s]),
                                                      size=len(per_seed[s]))].mean()
                            for s in picks])
    a = (1 - level) / 2
    low, high = np.quantile(draws, [a, 1 - a])
    return Boot(mean, float(low), float(high), _boot_p(draws.tolist()), len(per_seed))


@dataclass(frozen=True)
class SplitBoot:
    """:func:`split_bootstrap`'s answer: one :class:`Boot` per split, for the split average
    (the mean of the split means, the paper's "Avg.") and for the pooled mean (every question
    of every split weighted alike). ``n_groups`` of each is the number of seeds."""

    splits: dict[str, Boot]
    average: Boot
    pooled: Boot


def _resample_means(values, draws: int, rng) -> object:
    """Means of ``draws`` resamples with replacement of ``values`` (numpy array), in chunks of
    at most ~4M indices so a split of 14,000 questions does not need gigabytes."""
    import numpy as np

    n = len(values)
    out = np.empty(draws)
    chunk = max(1, 4_000_000 // n)
    for i in range(0, draws, chunk):
        m = min(chunk, draws - i)
        out[i : i + m] = values[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def split_bootstrap(seeds: Mapping[object, Mapping[str, Sequence[float]]], reps: int = 2000,
                    seed: int = 0, level: float = LEVEL, guard: bool = True) -> SplitBoot | None:
    """Two-level bootstrap of per-question values ``{seed: {split: [value per question]}}``
    (e.g. paired F1 differences): each draw picks as many seeds as there are, with
    replacement, then, within every picked seed and every split, as many questions as the
    split has, with replacement; the statistic is the mean over the picked seeds.

    The seed level carries the spread between RL runs, the question level the test questions
    drawn (a split is resampled within itself, so every draw keeps each split's size). With one
    seed it is the question bootstrap alone. Every seed must have the same splits, each with at
    least one value (ValueError otherwise); None for no seed. Percentile intervals; p-values as
    :func:`_boot_p` (two-sided, of "the mean is 0"). With 2-4 seeds, ``guard`` (default)
    widens each answer by :func:`few_seeds_guard`; ``guard=False`` is the bootstrap alone."""
    import numpy as np

    keys = list(seeds)
    if not keys:
        return None
    names = sorted(seeds[keys[0]])
    if not names or any(sorted(seeds[k]) != names or not all(len(v) for v in seeds[k].values())
                        for k in keys):
        raise ValueError(f"every seed needs the same non-empty splits; got "
                         f"{ {k: sorted(v) for k, v in seeds.items()} }")
    vals = [[np.asarray(seeds[k][b], dtype=float) for b in names] for k in keys]
    sizes = np.array([[len(v) for v in row] for row in vals], dtype=float)  # seed x split
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(keys), size=(reps, len(keys)))
    means = np.empty((len(names), reps, len(keys)))  # split x draw x picked slot
    for s in range(len(keys)):
        slot = picks == s
        for b in range(len(names)):
            means[b][slot] = _resample_means(vals[s][b], int(slot.sum()), rng)
    weights = sizes[picks] / sizes[picks].sum(axis=2, keepdims=True)  # draw x slot x split
    draws = {b: means[i].mean(axis=1) for i, b in enumerate(names)}
    draws_avg = means.mean(axis=0).mean(axis=1)
    draws_pool = (means.transpose(1, 2, 0) * weights).sum(axis=2).mean(axis=1)
    split_means = np.array([[v.mean() for v in row] for row in vals])  # seed x split
    pooled = (split_means * sizes).sum(axis=1) / sizes.sum(axis=1)

    def boot(per_seed, d) -> Boot:
        a = (1 - level) / 2
        low, high = np.quantile(d, [a, 1 - a])
        b = Boot(float(per_seed.mean()), float(low), float(high), _boot_p(d.tolist()), len(keys))
        return few_seeds_guard(b, per_seed.tolist(), level) if guard else b

    return SplitBoot({b: boot(split_means[:, i], draws[b]) for i, b in enumerate(names)},
                     boot(split_means.mean(axis=1), draws_avg), boot(pooled, draws_pool))


#: Below this many seeds the seed level of a bootstrap is too narrow to stand alone: 3 seeds
#: have 10 distinct resamples, and three differences of one sign give every draw that sign
#: (p = 2/2001 however small the differences): :func:`few_seeds_guard` widens it.
MIN_BOOTSTRAP_SEEDS = 5


def few_seeds_guard(b: Boot, per_seed: Sequence[float], level: float = LEVEL) -> Boot:
    """With 2 to ``MIN_BOOTSTRAP_SEEDS - 1`` seeds, the weaker of the bootstrap and the
    t-interval over the seeds' values (df = n - 1): the interval spanning both and the larger
    p-value. A claim then needs both to support it. Other n: ``b`` unchanged (one seed: the
    question bootstrap is all there is; five or more: the bootstrap stands)."""
    import math

    from scipy import stats

    n = len(per_seed)
    if not 2 <= n < MIN_BOOTSTRAP_SEEDS:
        return b
    mean = sum(per_seed) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (n - 1))
    if sd == 0:  # identical seeds: t says nothing beyond the bootstrap
        return b
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return Boot(b.mean, min(b.low, mean - half), max(b.high, mean + half), max(b.p, p),
                b.n_groups)


# --------------------------------------------------------------------------- families
def holm(pvalues: Mapping[str, float], alpha: float = 1 - LEVEL) -> dict[str, tuple[float, bool]]:
    """Holm's step-down adjustment of a family: ``{name: (adjusted p, survives at alpha)}``.

    Sorted ascending, the i-th smallest (0-based) gets ``max_{j<=i} min(1, (m − j)·p_(j))``;
    the effects survive while their adjusted p stays ≤ alpha (Holm 1979)."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m = len(order)
    out: dict[str, tuple[float, bool]] = {}
    running = 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * float(pvalues[name])))
        out[name] = (running, running <= alpha)
    return out


# --------------------------------------------------------------------------- survival
@dataclass(frozen=True)
class Survival:
    """One run's time to event: ``time`` (the collapse step, or the last validated step) and
    whether the event happened (False: censored, never seen to collapse)."""

    time: float
    event: bool


def kaplan_meier(runs: Sequence[Survival]) -> list[tuple[float, float]]:
    """The Kaplan–Meier curve ``[(time, S(time))]``, starting at (0, 1), one point per event
    time: ``S(t) = Π_{t_i <= t} (1 − d_i / n_i)`` (d events among n at risk at t_i; censored runs
    leave the risk set after their time)."""
    curve = [(0.0, 1.0)]
    s = 1.0
    for t in sorted({r.time for r in runs if r.event}):
        at_risk = sum(1 for r in runs if r.time >= t)
        d = sum(1 for r in runs if r.time == t and r.event)
        s *= 1 - d / at_risk
        curve.append((float(t), s))
    return curve


def median_time(runs: Sequence[Survival]) -> float | None:
    """The first time S(t) ≤ 0.5 on the Kaplan–Meier curve; None when it stays above (fewer
    than half the runs collapsed: the median is not reached)."""
    for t, s in kaplan_meier(runs)[1:]:
        if s <= 0.5:
            return t
    return None


def logrank(a: Sequence[Survival], b: Sequence[Survival]) -> tuple[float, float]:
    """The two-sample log-rank test: ``(chi², p)`` with one degree of freedom.

    At each event time: observed events of ``a`` minus expected ``n_a·d/n`` and the
    hypergeometric variance ``n_a·n_b·d·(n−d) / (n²·(n−1))``, summed; chi² = (O−E)²/V. No event
    at all gives (0, 1)."""
    from scipy.stats import chi2

    times = sorted({r.time for r in (*a, *b) if r.event})
    o_minus_e, var = 0.0, 0.0
    for t in times:
        na = sum(1 for r in a if r.time >= t)
        nb = sum(1 for r in b if r.time >= t)
        da = sum(1 for r in a if r.time == t and r.event)
        d = da + sum(1 for r in b if r.time == t and r.event)
        n = na + nb
        o_minus_e += da - na * d / n
        if n > 1:
            var += na * nb * d * (n - d) / (n * n * (n - 1))
    if var == 0:
        return 0.0, 1.0
    stat = o_minus_e ** 2 / var
    return stat, float(chi2.sf(stat, 1))
