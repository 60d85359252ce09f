"""Rollout reward: SQuAD-style EM/F1, answer extraction, the Search-R1 format check, gated score.

The reward of a rollout is its F1 against the golden answers, granted only when the whole
response follows the Search-R1 tag protocol (paper: "gated" F1). ``compute_score`` has verl's
custom-reward signature, so verl and the local backend score rollouts with the same code.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from calibadv.errors import ConfigError

__all__ = [
    "normalize_answer",
    "exact_match",
    "f1_score",
    "extract_answer",
    "is_valid_format",
    "normalize_golds",
    "compute_score",
]

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# HotpotQA: a yes/no/noanswer prediction only scores against the identical gold.
_SPECIAL = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ASCII punctuation, drop articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _as_list(golds: str | Iterable[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    return [str(g) for g in golds]


def exact_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold; a blank answer never matches."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(g) for g in _as_list(golds)))


def _f1_single(pred: str, gold: str) -> float:
    if (pred in _SPECIAL or gold in _SPECIAL) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: str | Iterable[str]) -> float:
    """Bag-of-words F1 in [0, 1], max over the golden answers (HotpotQA yes/no rule applies)."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return max((_f1_single(pred, normalize_answer(g)) for g in _as_list(golds)), default=0.0)


# Content may not contain an opening <answer>, so nested/unclosed openers resolve to the
# innermost complete pair and "the last answer" is the last complete pair in the text.
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)


def extract_answer(response: str) -> str | None:
    """Text of the last complete ``<answer>…</answer>`` of the *response* (stripped), else None.

    Pass only the generated response (verl's ``solution_str``), never the prompt: the prompt's
    own example answer would otherwise be taken for the model's.
    """
    matches = _ANSWER.findall(response)
    return matches[-1].strip() if matches else None


# --- format check: a small DFA over the tag sequence --------------------------------------
_TAG = re.compile(r"</?(?:think|search|information|answer)>")
_START, _THINK, _AFTER_THINK, _SEARCH, _AFTER_SEARCH = "start", "think", "after_think", "search", "after_search"
_INFO, _AFTER_INFO, _ANSWER_IN, _DONE = "info", "after_info", "answer", "done"
# States where text between tags must be white space (outside every tag pair).
_OUTSIDE = frozenset({_START, _AFTER_THINK, _AFTER_SEARCH, _AFTER_INFO, _DONE})
_TRANSITIONS: dict[tuple[str, str], str] = {
    (_START, "<think>"): _THINK,
    (_THINK, "</think>"): _AFTER_THINK,
    (_AFTER_THINK, "<search>"): _SEARCH,
    (_AFTER_THINK, "<answer>"): _ANSWER_IN,
    (_SEARCH, "</search>"): _AFTER_SEARCH,
    (_AFTER_SEARCH, "<information>"): _INFO,
    (_INFO, "</information>"): _AFTER_INFO,
    (_AFTER_INFO, "<think>"): _THINK,
    (_ANSWER_IN, "</answer>"): _DONE,
}


def is_valid_format(response: str, prethink: bool = False, require_search: bool = False) -> bool:
    """True iff the response is think → (search → information → think)* → answer.

    Only white space may sit between tag pairs, tags must pair up in that order, nothing but
    white space may follow ``</answer>``. With ``prethink`` the opening ``<think>`` of the first
    turn belongs to the prompt, so the response starts inside a think. With
    ``require_search`` at least one search step is required (the authors' CalibAdv check).
    """
    state = _THINK if prethink else _START
    searches = 0
    pos = 0
    for match in _TAG.finditer(response):
        between = response[pos : match.start()]
        if state in _OUTSIDE and between.strip():
            return False
        nxt = _TRANSITIONS.get((state, match.group(0)))
        if nxt is None:
            return False
        searches += nxt == _SEARCH
        state, pos = nxt, match.end()
    if response[pos:].strip():
        return False
    return state == _DONE and (searches > 0 or not require_search)


# --- verl custom reward -------------------------------------------------------------------
def normalize_golds(ground_truth: Any) -> list[str]:
    """Golden answers as a list of str from any shape verl hands over.

    Accepts ``{"target": [...]}`` (the Parquet ``reward_model.ground_truth``), a list/tuple,
    a numpy array (Parquet list columns arrive as arrays), or a single string.
    """
    value = ground_truth
    if isinstance(value, Mapping):
        if "target" not in value:
            raise ConfigError(
                f"ground_truth dict has no 'target' key (keys: {sorted(value)}); "
                "write it as {'target': [answers...]}"
            )
        value = value["target"]
    if isinstance(value, str):
        return [value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        value = value.tolist()
        if isinstance(value, str):
            return [value]
    if isinstance(value, (list, tuple)):
        golds = [str(g) for g in value]
        if not golds:
            raise ConfigError("ground_truth has no golden answers; give at least one")
        return golds
    raise ConfigError(
        f"ground_truth of type {type(value).__name__} is not supported; "
        "use a string, a list of strings or {'target': [...]}"
    )


def _option(name: str, kwargs: Mapping[str, Any], extra_info: Any) -> bool:
    """Keyword arguments (verl's ``reward_kwargs``) win over ``extra_info``; default False."""
    if name in kwargs:
        value = kwargs[name]
    elif isinstance(extra_info, Mapping) and name in extra_info:
        value = extra_info[name]
    else:
        return False
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, bool):
        raise ConfigError(f"reward option {name!r} must be true or false, got {value!r}")
    return value


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float | bool]:
    """verl custom reward: ``{"score": gated F1, "f1", "em", "format_ok"}``.

    ``solution_str`` is the decoded response (generated turns and observations, no prompt).
    Options ``prethink`` and ``require_search`` come from keyword arguments (verl:
    ``reward.custom_reward_function.reward_kwargs``) or else from ``extra_info``; both
    default to False. ``data_source`` is accepted for the signature and not used: every
    benchmark is scored the same way.
    """
    del data_source
    golds = normalize_golds(ground_truth)
    prethink = _option("prethink", kwargs, extra_info)
    require_search = _option("require_search", kwargs, extra_info)
    answer = extract_answer(solution_str)
    f1 = f1_score(answer, golds)
    em = exact_match(answer, golds)
    format_ok = is_valid_format(solution_str, prethink=prethink, require_search=require_search)
    return {"score": f1 if format_ok else 0.0, "f1": f1, "em": em, "format_ok": format_ok}
