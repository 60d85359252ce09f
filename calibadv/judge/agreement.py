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

from collections.abc import Sequence

from calibadv.shares import Z95, wilson

#: two-sided 95 % normal quantile; Wilson's interval is :func:`calibadv.shares.wilson` (one
#: implementation for the judge and the report; the layers keep it below both)
__all__ = ["Z95", "cohen_kappa", "wilson"]


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
