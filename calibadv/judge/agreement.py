"""Is agreement skill? Wilson intervals for shares and Cohen's kappa for two raters.

A raw agreement share says little on its own: when 80 % of the sampled steps really advanced a
hop, a judge that answers "helpful" every time agrees 80 % of the time and knows nothing. Cohen's
kappa subtracts the agreement two raters with these marginals would reach by chance,
``kappa = (p_o - p_e) / (1 - p_e)``, so such a constant judge reads 0 (Cohen 1960, Educational
and Psychological Measurement 20(1), eq. 1). Every share of Table 5 carries a Wilson score
interval (Wilson 1927): it stays inside [0, 1] and does not collapse to a point at 0 % or 100 %
with the small samples proxy validation has (20 steps per checkpoint in the paper, 4 here).
The interval is over the sampled steps (binomial sampling of steps), not over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``k`` successes in ``n`` trials (None when n = 0)."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k = {k} is not in [0, n = {n}]")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the exact ends at k = 0 and k = n (rounding leaves ~1e-18 there otherwise)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def cohen_kappa(pairs: Sequence[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two binary raters over ``pairs`` (None when undefined: no pairs, or
    both raters constant and equal, where chance agreement is 1)."""
    n = len(pairs)
    if n == 0:
        return None
    p_o = sum(a == b for a, b in pairs) / n
    pa = sum(a for a, _ in pairs) / n
    pb = sum(b for _, b in pairs) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_o - p_e) / (1 - p_e)
