"""StepSearch's rewards (arXiv 2505.15107; rules as read from its official code, see
docs/baselines.md): a per-search step reward from the retrieved documents' TF-IDF similarity to
the gold documents, and the final answer reward with its search-key bonus.

These are the reward half of the StepSearch baseline; :func:`token_rewards` places them on a
rollout's tokens for the ``stepsearch`` token reward (:mod:`calibadv.methods.token_rewards`), which the
``gae`` estimator (PPO with a value model) reads: the ``stepsearch`` preset. Pure functions
(scikit-learn's TF-IDF, as the official code uses), so both backends call the same ones.
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
    "check_run_data",
    "step_documents",
    "token_rewards",
]

STEP_WEIGHT = 0.6  # step reward = 0.6 · (information gain − redundancy)
KEY_WEIGHT = 0.618  # final reward = F1 + 0.618 · search-key score
_FINAL_ANSWER = re.compile(r"<answer>(.*?)</answer>\s*$", re.DOTALL)
_INFO = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_DOC = re.compile(r"(?m)^\s*Doc \d+\(Title:")
MALFORMED = -1.0  # final reward of a response without a final <answer>…</answer>


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
    from calibadv.answer_score import f1_score

    if not key_groups:
        return 0.0
    scores = [max((f1_score(q, list(group)) for q in queries if q), default=0.0) for group in key_groups]
    return sum(scores) / len(scores)


def final_reward(response_text: str, golds: Sequence[str], queries: Sequence[str],
                 key_groups: Sequence[Sequence[str]]) -> float | None:
    """Answer F1 (+ 0.618 · search-key score where key groups exist), or None when the response
    does not end with a final ``<answer>…</answer>`` (the caller gives −1 and no step rewards)."""
    from calibadv.answer_score import f1_score

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


def step_documents(rollout: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
    """Per search step (turn with a non-empty query, in order), its retrieved documents as
    (doc id, text) pairs: the k-th ``<information>`` block of the response holds the k-th
    search's ``Doc i(Title: …) …`` entries, in the order of that turn's ``doc_ids``."""
    blocks = _INFO.findall(rollout.get("response_text") or "")
    queries = rollout.get("queries") or []
    doc_ids = rollout.get("doc_ids") or []
    out, k = [], 0
    for t, q in enumerate(queries):
        if not q:
            continue
        block = blocks[k] if k < len(blocks) else ""
        k += 1
        starts = [m.start() for m in _DOC.finditer(block)]
        texts = [block[a:b].strip() for a, b in zip(starts, [*starts[1:], len(block)])]
        ids = [str(d) for d in (doc_ids[t] if t < len(doc_ids) else [])]
        out.append(list(zip(ids, texts)))
    return out


def token_rewards(rollout: Mapping[str, Any]) -> list[tuple[int, float]]:
    """StepSearch's rewards of one rollout as (response position, reward) pairs, final last.

    Step s's reward 0.6·(gain − redundancy) sits on the last token of its turn, which ends with
    ``</search>`` (the stop string is kept); the final reward (:func:`final_reward`) on the last
    generated token. A malformed response gets −1 there and no step rewards, as the official
    code. ``rollout`` carries ``turn_spans``, ``queries``, ``doc_ids``, ``response_text``,
    ``golden_answers`` and the question's ``gold_docs`` / ``sub_query_keys``."""
    spans = rollout.get("turn_spans") or []
    ends = [int(e) for s, e in spans if int(e) > int(s)]
    if not ends:
        return []
    queries = [str(q) for q in rollout.get("queries") or []]
    final = final_reward(rollout.get("response_text") or "", rollout.get("golden_answers") or [],
                         [q for q in queries if q], rollout.get("sub_query_keys") or [])
    last = max(ends) - 1
    if final is None:
        return [(last, MALFORMED)]
    steps = step_rewards(step_documents(rollout), [str(g) for g in rollout.get("gold_docs") or []])
    search_turns = [t for t, q in enumerate(queries) if q and t < len(spans)]
    out = [(int(spans[t][1]) - 1, r.reward) for t, r in zip(search_turns, steps)]
    return [*out, (last, float(final))]
