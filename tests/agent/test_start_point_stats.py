"""benchmarks/start_point.py: what GRPO's first step would see, counted per group by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "start_point", Path(__file__).resolve().parents[2] / "benchmarks" / "start_point.py")
start_point = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(start_point)


@pytest.mark.parametrize("rewards, g, expected", [
    # two groups of 4: one with a silver rollout (1.0 >= 0.7), one all zero
    ([1.0, 0, 0, 0, 0, 0, 0, 0], 4, {"reward": 0.125, "empty_silver": 0.5, "mixed": 0.5}),
    # mixed but below tau: no silver set, yet GRPO still gets a signal
    ([0.5, 0, 0, 0, 0.8, 0.8, 0.8, 0.8], 4, {"reward": 0.4625, "empty_silver": 0.5, "mixed": 0.5}),
    ([0.7, 0.0], 2, {"reward": 0.35, "empty_silver": 0.0, "mixed": 1.0}),  # tau itself is silver
])
def test_group_stats_by_hand(rewards, g, expected):
    assert start_point.group_stats(rewards, g, tau=0.7) == pytest.approx(expected)
