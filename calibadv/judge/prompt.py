"""The judge's prompt (a versioned template) and the strict parser of its verdict.

One template serves both uses of the judge: proxy validation (paper Table 5: "is this step
genuinely helpful?") and judge-scored training (paper Table 3: c = 1 / 0.5 / 0). The human
annotation sheets show the same instructions (:data:`INSTRUCTIONS`), so humans and the LLM
answer the same question, as in the paper.

The paper's own prompt (its Appendix F) is not available to us: this text is ours. Changing a
word of it must bump :data:`TEMPLATE_VERSION`, because the verdict cache is keyed by the version
and the exact rendered prompt: old answers then stay in the cache but are never served for the
new prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TEMPLATE_VERSION = "calibadv-step-judge-v1"

#: The verdicts a judge may give, and what they mean.
VERDICTS: dict[float, str] = {
    1.0: "helpful: the query asks for information the question needs, and the returned "
    "passages contain (part of) it, so the agent is closer to the answer",
    0.5: "partially helpful: relevant but incomplete, redundant with an earlier step, or the "
    "right query with passages that only hint at the needed information",
    0.0: "not helpful or misleading: off-topic, repeats an earlier step without new "
    "information, or leads away from the answer",
}

SYSTEM = (
    "You evaluate single steps of a search agent. You are strict, brief and consistent, and "
    "you always end with the verdict line in the required format."
)

INSTRUCTIONS = (
    "A search agent answers a question by thinking, issuing search queries and reading the "
    "passages each search returns. Judge ONE intermediate step: is it genuinely helpful for "
    "answering the question? Use the reference answer(s) to know where the agent should get "
    "to; the agent itself did not see them.\n"
    + "\n".join(f"- {_v:g} = {text}" for _v, text in VERDICTS.items())
)

FORMAT_LINE = "Reply with exactly one line: VERDICT: 1, VERDICT: 0.5 or VERDICT: 0"

REASK = (
    "Your reply did not contain a verdict in the required format. "
    + FORMAT_LINE
    + " (nothing else)."
)


@dataclass(frozen=True)
class StepView:
    """What the judge sees of one intermediate step (and what an annotator sees)."""

    question: str
    golden_answers: Sequence[str]
    think: str
    query: str
    passages: str  # the observation text the agent read after this search
    earlier_queries: Sequence[str] = field(default_factory=tuple)
    step_number: int = 1  # 1-based position among the rollout's intermediate steps


def _clip(text: str, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def render(view: StepView, max_passage_chars: int = 3000) -> list[dict[str, str]]:
    """Chat messages asking for the verdict of ``view`` (template :data:`TEMPLATE_VERSION`)."""
    earlier = (
        "\n".join(f"  step {i}: {q or '(no valid query)'}" for i, q in enumerate(view.earlier_queries, 1))
        or "  (none: this is the first step)"
    )
    user = (
        f"{INSTRUCTIONS}\n\n"
        f"Question: {view.question.strip()}\n"
        f"Reference answer(s): {' | '.join(a.strip() for a in view.golden_answers) or '(none)'}\n\n"
        f"Earlier search queries of the agent:\n{earlier}\n\n"
        f"The step to judge (step {view.step_number}):\n"
        f"Reasoning: {_clip(view.think, 1500) or '(empty)'}\n"
        f"Search query: {view.query.strip() or '(empty)'}\n"
        f"Passages returned:\n{_clip(view.passages, max_passage_chars) or '(none)'}\n\n"
        f"{FORMAT_LINE}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def reask(messages: Sequence[dict[str, str]], answer: str) -> list[dict[str, str]]:
    """The conversation asking once more, after the unparsable ``answer``."""
    return [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": REASK}]


_VALUE = r"(1(?:\.0+)?|0?\.50*|0(?:\.0+)?)"
_LINE = re.compile(rf"^\W*verdict\W*[:=]\s*\**\s*{_VALUE}\s*\**\s*[.!]?\s*$", re.IGNORECASE)
_BARE = re.compile(rf"^\s*{_VALUE}\s*[.!]?\s*$")
_MENTION = re.compile(r"verdict", re.IGNORECASE)


def parse_verdict(answer: Any) -> float | None:
    """The verdict 1.0 / 0.5 / 0.0 in ``answer``, or None when it is not there unambiguously.

    Strict on purpose: a verdict counts only as a whole line ``VERDICT: <v>`` (any case,
    optional markdown bold, a trailing full stop) or an answer that is just the number. Two
    different verdict lines, a verdict line with other text on it, or any other value are
    unparsable: a wrong parse would become a training signal.
    """
    if not isinstance(answer, str):
        return None
    text = answer.strip()
    bare = _BARE.match(text)
    if bare:
        return _value(bare.group(1))
    found = {_value(m.group(1)) for line in text.splitlines() if (m := _LINE.match(line))}
    if len(found) != 1:
        return None
    n_lines = sum(1 for line in text.splitlines() if _MENTION.search(line))
    if n_lines != sum(1 for line in text.splitlines() if _LINE.match(line)):
        return None  # another line talks about a verdict in some other form: ambiguous
    return found.pop()


def _value(token: str) -> float:
    v = float(token)
    return 0.5 if v == 0.5 else (1.0 if v == 1.0 else 0.0)
