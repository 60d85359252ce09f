"""StepSearch's rewards (arXiv 2505.15107; rules as read from its official code, see
docs/baselines.md): a per-search step reward from the retrieved documents' TF-IDF similarity to
the gold documents, and the final answer reward with its search-key bonus.

These are the reward half of the StepSearch baseline. The other half (PPO with a value model:
a value head and GAE on the local backend, verl's critic) is not built yet, so no preset uses
them; docs/baselines.md says what is missing. Pure functions (scikit-learn's TF-IDF, as the
official code uses), so both backends can call them once the PPO half exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calibadv.errors import ConfigError

__all__ = [
    "STEP_WEIGHT",
    "KEY_WEIGHT",
    "StepReward",
    "gold_similarities",
    "step_rewards",
    "search_key_score",
    "final_reward",
    "check_stepsearch_data",
]

STEP_WEIGHT = 0.6  # step reward = 0.6 · (information gain − redundancy)
KEY_WEIGHT = 0.618  # final reward = F1 + 0.618 · search-key score
_FINAL_ANSWER = re.compile(r"<answer>(.*?)</answer>\s*$", re.DOTALL)


@dataclass(frozen=True)
class StepReward:
    """One search step: information gain, redundancy and the reward 0.6·(gain − redundancy)."""

    gain: float
    redundancy: float

    @property
    def reward(self) -> float:
        return STEP_WEIGHT * (self.gain - self.redundancy)


def gold_similarities(doc: str, golds: Sequence[str]) -> list[float]:
    """TF-IDF cosine of ``doc`` with each gold document, the vectoriser fit on [doc] + golds
    (one fit per retrieved document, as the official code does; scikit-learn defaults)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    if not golds:
        return []
    try:
        matrix = TfidfVectorizer().fit_transform([doc, *golds])
    except ValueError:  # no word at all in doc and golds (empty vocabulary)
        return [0.0] * len(golds)
    return [float(x) for x in cosine_similarity(matrix[0], matrix[1:])[0]]


def step_rewards(steps: Sequence[Sequence[tuple[str, str]]], golds: Sequence[str]) -> list[StepReward]:
    """Per search step s (its retrieved documents as (id, text) pairs):

    gain_s = mean over gold docs g of max(0, m_s(g) − max_{s'<s} m_{s'}(g)), where m_s(g) is
    the best similarity of a step-s document to g (0 before the first step);
    redundancy_s = share of step s's documents already retrieved by an earlier step."""
    best = [0.0] * len(golds)
    seen: set[str] = set()
    out = []
    for docs in steps:
        m = [0.0] * len(golds)
        for _, text in docs:
            for j, sim in enumerate(gold_similarities(text, golds)):
                m[j] = max(m[j], sim)
        gain = sum(max(0.0, m[j] - best[j]) for j in range(len(golds))) / len(golds) if golds else 0.0
        ids = [d for d, _ in docs]
        redundancy = sum(d in seen for d in ids) / len(ids) if ids else 0.0
        best = [max(a, b) for a, b in zip(best, m)]
        seen.update(ids)
        out.append(StepReward(gain, redundancy))
    return out


def search_key_score(queries: Sequence[str], key_groups: Sequence[Sequence[str]]) -> float:
    """Mean over the gold sub-query key groups of the best word-F1 of any query with any key
    of the group (0 without key groups)."""
    from calibadv.reward import f1_score

    if not key_groups:
        return 0.0
    scores = [max((f1_score(q, list(group)) for q in queries if q), default=0.0) for group in key_groups]
    return sum(scores) / len(scores)


def final_reward(response_text: str, golds: Sequence[str], queries: Sequence[str],
                 key_groups: Sequence[Sequence[str]]) -> float | None:
    """Answer F1 (+ 0.618 · search-key score where key groups exist), or None when the response
    does not end with a final ``<answer>…</answer>`` (the caller gives −1 and no step rewards)."""
    from calibadv.reward import f1_score

    match = _FINAL_ANSWER.search(response_text or "")
    if match is None:
        return None
    score = f1_score(match.group(1).strip(), list(golds))
    if key_groups:
        score += KEY_WEIGHT * search_key_score(queries, key_groups)
    return score


#: What StepSearch needs per question (``extra_info`` of the training Parquet).
REQUIRED_FIELDS = ("gold_docs", "sub_query_keys")


def check_stepsearch_data(rows: Sequence[Mapping[str, Any]], source: str) -> None:
    """ConfigError naming the fields StepSearch needs when ``rows`` (``extra_info`` dicts) lack
    them: real QA sets (NQ, HotpotQA, …) carry no gold paragraphs or sub-query keys; StepSearch's
    own released training set does."""
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_FIELDS if not row.get(k)]
        if missing:
            raise ConfigError(
                f"{source}: row {i} has no {' or '.join(missing)}; StepSearch's step and search-key "
                "rewards need the gold supporting paragraphs and the sub-query keys of every "
                "question. Train it on StepSearch's own released training set (or on the "
                "synthetic world, which has both), not on a plain QA set"
            )
