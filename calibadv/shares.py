"""Wilson's score interval of a share k/n: the one implementation the judge's agreement shares
and the report's pooled shares both use.

It lives in the bottom layer because its two callers, :mod:`calibadv.judge.agreement` and
:mod:`calibadv.evaluate.intervals`, are siblings of one layer and may not import each other.
Standard library only (``statistics.NormalDist`` for the quantile), so it costs nothing to
import on any path.
"""

from __future__ import annotations

import math
from statistics import NormalDist

LEVEL = 0.95
#: two-sided 95 % normal quantile
Z95 = NormalDist().inv_cdf(0.975)


def z_of(level: float = LEVEL) -> float:
    """The two-sided normal quantile of ``level`` (1.95996… at 0.95)."""
    return NormalDist().inv_cdf((1 + level) / 2)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson's score interval of the share k/n as fractions in [0, 1] (None for n = 0).

    ``(p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)`` (Wilson 1927), z the two-sided normal
    quantile of ``level``. Unlike a t- or normal interval it stays inside [0, 1] and does not
    shrink to a point at 0 % or 100 %; the ends are exactly 0 at k = 0 and 1 at k = n (rounding
    would leave ~1e-18 there)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a share needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    z = z_of(level)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high
