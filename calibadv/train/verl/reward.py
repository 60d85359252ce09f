"""verl's custom reward for our runs: :func:`calibadv.answer_score.compute_score` plus two signals.

verl merges the agent loop's ``extra_fields`` into ``extra_info`` before calling the reward,
and logs every key of the returned dict as a validation metric. Passing the rollout's
perplexity verdict and search count through here is what gives the verl backend the
``high_ppl_ratio`` and ``mean_searches`` columns of ``val.jsonl`` (and ``gated_em``, the EM
column); the score itself is exactly ``calibadv.answer_score.compute_score``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibadv.answer_score import compute_score as _score
from calibadv.train.verl.signals import HIGH_PPL_THRESHOLD


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    result = dict(_score(data_source, solution_str, ground_truth, extra_info, **kwargs))
    result["gated_em"] = float(result["em"]) if result["format_ok"] else 0.0
    info = extra_info if isinstance(extra_info, Mapping) else {}
    if "ppl" in info:
        result["high_ppl"] = float(float(info["ppl"]) >= HIGH_PPL_THRESHOLD)
    if "num_searches" in info:
        result["num_searches"] = float(info["num_searches"])
    return result
