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
    "STEP_SCALE",
    "KEY_WEIGHT",
    "StepReward",
    "query_f1",
    "passage_content",
    "gold_similarities",
    "step_rewards",
    "search_key_score",
    "final_reward",
    "check_stepsearch_data",
    "check_run_data",
    "step_documents",
    "token_rewards",
]

#: Effective weight of a step score on its ``</search>`` token in the released code: main_ppo.py
#: L94 adds ``step_reward_scale`` (0.6, train.sh) × a row that ``_compute_step_reward_tensor``
#: (L119-131) has already written the step score into, in place: (1 + 0.6) × score. The
#: paper's 0.6 is reachable with the ``stepsearch`` reward's ``step_scale`` knob.
STEP_SCALE = 1.6
KEY_WEIGHT = 0.618  # final reward = F1 + 0.618 · search-key score (qa_step.py L218, L256-257)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_INFO = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_DOC = re.compile(r"(?m)^\s*Doc \d+\(Title:")
# "Doc i(Title: T) " before a passage's content: the title ends at the first ")" followed by
# white space (a title with ") " inside it leaves its tail in the content)
_DOC_HEAD = re.compile(r"^\s*Doc \d+\(Title:.*?\)(?=\s|$)", re.DOTALL)
MALFORMED = -1.0  # final reward of a response without a final <answer>…</answer>


@dataclass(frozen=True)
class StepReward:
    """One search step: information gain and redundancy; ``score`` = gain − redundancy is what
    the official code writes on the step's ``</search>`` token before scaling (qa_step.py L245)."""

    gain: float
    redundancy: float

    @property
    def score(self) -> float:
        return self.gain - self.redundancy


def query_f1(prediction: str | None, golds: str | Sequence[str]) -> float:
    """StepSearch's ``query_f1_score`` (qa_step.py L69-104): SQuAD-normalised bag-of-words F1,
    max over the golds, rounded to 4 decimals; no yes/no rule. Scores both the answer and the
    search queries."""
    from collections import Counter

    from calibadv.answer_score import normalize_answer

    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in [golds] if isinstance(golds, str) else golds:
        ans = normalize_answer(str(gold)).split()
        overlap = sum((Counter(pred) & Counter(ans)).values())
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred), overlap / len(ans)
        best = max(best, 2 * precision * recall / (precision + recall))
    return round(best, 4)


def passage_content(doc: str) -> str:
    """A retrieved passage without its ``Doc i(Title: T)`` head: the official code scores the
    content after each ``<## Title ##>`` marker (qa_step.py L54-66, L240)."""
    return _DOC_HEAD.sub("", doc, count=1).strip()


def gold_similarities(doc: str, golds: Sequence[str]) -> list[float]:
    """TF-IDF cosine (clipped at 0) of ``doc`` with each gold document, the vectoriser fit on
    [doc] + golds, one fit per retrieved document (submodule.py ``subm_tfidf_cosine``;
    scikit-learn defaults). Callers pass normalised text (qa_step.py L121, L130)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    if not golds:
        return []
    if doc == "":
        return [0.0] * len(golds)
    try:
        matrix = TfidfVectorizer().fit_transform([doc, *golds])
    except ValueError:  # no word at all in doc and golds (empty vocabulary)
        return [0.0] * len(golds)
    return [max(0.0, float(x)) for x in cosine_similarity(matrix[0], matrix[1:])[0]]


def step_rewards(steps: Sequence[Sequence[tuple[str, str]]], golds: Sequence[str]) -> list[StepReward]:
    """Per search step s (its retrieved passages' contents as (id, content) pairs), as
    ``step_information_gain`` (qa_step.py L106-153):

    gain_s = mean over gold docs g of max(0, m_s(g) − max_{s'<s} m_{s'}(g)), where m_s(g) is
    the best TF-IDF similarity of a step-s passage to g, both SQuAD-normalised (0 before the
    first step); redundancy_s = (number of step s's passages whose content was already seen,
    earlier in this step included) / (number of step s's passages)."""
    from calibadv.answer_score import normalize_answer

    norm_golds = [normalize_answer(str(g)) for g in golds]
    best = [0.0] * len(golds)
    seen: set[str] = set()
    out = []
    for docs in steps:
        m = [0.0] * len(golds)
        for _, text in docs:
            for j, sim in enumerate(gold_similarities(normalize_answer(text), norm_golds)):
                m[j] = max(m[j], sim)
        gain = sum(max(0.0, m[j] - best[j]) for j in range(len(golds))) / len(golds) if golds else 0.0
        best = [max(a, b) for a, b in zip(best, m)]
        redundancy = 0.0
        for _, text in docs:
            if text in seen:
                redundancy += 1 / len(docs)
            else:
                seen.add(text)
        out.append(StepReward(gain, redundancy))
    return out


def search_key_score(queries: Sequence[str], key_groups: Sequence[Sequence[str]]) -> float:
    """``step_search_keys_match`` (qa_step.py L176-216): each query, in order, credits the one
    key group it matches best (word-F1 :func:`query_f1`, the first group on a tie, none when
    every F1 is 0) with that F1, overwriting what an earlier query gave that group; the score
    is the sum over groups / number of groups (0 without queries or key groups). A hop
    searched twice thus keeps its *last* query's F1."""
    if not queries or not key_groups:
        return 0.0
    credit = [0.0] * len(key_groups)
    for query in queries:
        best, best_group = 0.0, -1
        for g, group in enumerate(key_groups):
            f1 = query_f1(query, [str(k) for k in group])
            if f1 > best:
                best, best_group = f1, g
        if best_group >= 0:
            credit[best_group] = best
    return sum(credit) / len(key_groups)


def final_reward(response_text: str, golds: Sequence[str], queries: Sequence[str],
                 key_groups: Sequence[Sequence[str]]) -> float | None:
    """Answer F1 of the last ``<answer>`` (+ 0.618 · search-key score where key groups exist),
    or None when anything but white space follows the last ``<answer>…</answer>`` or there is
    none (qa_step.py L218-257: ``answer_last_check``; the caller gives −1, no step rewards)."""
    text = response_text or ""
    matches = list(_ANSWER.finditer(text))
    if not matches or text[matches[-1].end():].strip():
        return None
    score = query_f1(matches[-1].group(1).strip(), list(golds))
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
    search's ``Doc i(Title: …) …`` entries, in the order of that turn's ``doc_ids``; each text
    is the passage's content (:func:`passage_content`)."""
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
        texts = [passage_content(block[a:b]) for a, b in zip(starts, [*starts[1:], len(block)])]
        ids = [str(d) for d in (doc_ids[t] if t < len(doc_ids) else [])]
        out.append(list(zip(ids, texts)))
    return out


def token_rewards(rollout: Mapping[str, Any], step_scale: float = STEP_SCALE) -> list[tuple[int, float]]:
    """StepSearch's rewards of one rollout as (response position, reward) pairs, final last.

    Step s's reward ``step_scale``·(gain − redundancy) (1.6 in the released code, see
    :data:`STEP_SCALE`) sits on the last token of its turn, which ends with
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
    out = [(int(spans[t][1]) - 1, step_scale * r.score) for t, r in zip(search_turns, steps)]
    return [*out, (last, float(final))]
