"""Collapse point of a training run, from its validation curve.

The paper evaluates "the last checkpoint before collapse" without a formula. Definition used
here (configurable through ``training.collapse_delta`` and ``training.collapse_window``):

1. smooth the validation score with a trailing moving average over ``window`` points;
2. track the running maximum of the smoothed score;
3. the collapse step is the first validation step where the smoothed score is more than
   ``delta`` (absolute, score in [0, 1]) below the running maximum **and stays more than
   ``delta`` below that peak at every later validation** (it never recovers).

A dip that recovers is not a collapse; a drop at the very last point counts (nothing after it
recovers). Returns None when no collapse is found.
"""

from __future__ import annotations

from collections.abc import Sequence


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average; the first points average over what exists so far."""
    if window < 1:
        raise ValueError(f"collapse_window must be >= 1, got {window}")
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def collapse_step(
    steps: Sequence[int], scores: Sequence[float], delta: float, window: int
) -> int | None:
    """First step of a sustained drop of more than ``delta`` below the running peak."""
    if len(steps) != len(scores):
        raise ValueError("steps and scores must have the same length")
    if delta < 0:
        raise ValueError(f"collapse_delta must be >= 0, got {delta}")
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    steps = [steps[i] for i in order]
    sm = smooth([scores[i] for i in order], window)
    peaks, peak = [], float("-inf")
    for v in sm:
        peak = max(peak, v)
        peaks.append(peak)
    tol = 1e-9  # averaging equal scores must not read as a drop
    for i in range(len(sm)):
        floor = peaks[i] - delta - tol
        if sm[i] < floor and all(sm[j] < floor for j in range(i, len(sm))):
            return steps[i]
    return None


def select_checkpoint(
    saved_steps: Sequence[int], collapse: int | None
) -> tuple[int, str]:
    """(step, reason): last saved checkpoint before the collapse step, else the newest."""
    if not saved_steps:
        raise ValueError("no checkpoint was saved")
    saved = sorted(saved_steps)
    if collapse is None:
        return saved[-1], "no collapse: final checkpoint"
    before = [s for s in saved if s < collapse]
    if before:
        return before[-1], f"last checkpoint before the collapse at step {collapse}"
    return saved[0], f"collapse at step {collapse} precedes every checkpoint: earliest one"
