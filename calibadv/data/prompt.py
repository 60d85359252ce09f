"""The search-agent prompt and its tokenisation (with or without PreThink).

The prompt is stored in the Parquet as plain chat messages; PreThink (the literal ``<think>``
that opens the first turn) is appended at tokenisation time so one Parquet serves every method.
"""

from __future__ import annotations

from typing import Any

TAGS = ("<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>",
        "<information>", "</information>")
PRETHINK_SUFFIX = "<think>"

PROMPT_TEMPLATE = (
    "Answer the question below. Reason inside <think> and </think> before every action, and "
    "again whenever new information arrives. When a fact is missing, search for it by writing "
    "<search> query </search>; the top results are returned between <information> and "
    "</information>. Search as many times as you need. When you are sure, write only the final "
    "answer inside <answer> and </answer>, for example <answer> Beijing </answer>.\n"
    "Question: {question}\n"
)


def format_question(question: str) -> str:
    """Strip whitespace and end with a question mark, as the Search-R1 data scripts do."""
    q = " ".join(str(question).split())
    if not q:
        raise ValueError("empty question: every QA row needs a non-empty 'question'")
    return q if q.endswith("?") else q + "?"


def build_messages(question: str) -> list[dict[str, str]]:
    """The chat messages of one question (a single user turn)."""
    return [{"role": "user", "content": PROMPT_TEMPLATE.format(question=format_question(question))}]


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], prethink: bool) -> str:
    """Chat template with the assistant header, plus ``<think>`` when PreThink is on."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text + PRETHINK_SUFFIX if prethink else text


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]], prethink: bool) -> list[int]:
    """Token ids of the prompt: chat template + generation prompt (+ ids of ``<think>``).

    The template is rendered to text and encoded without extra special tokens, so the ids are
    those the chat template defines (no BOS is added twice); ``<think>`` is encoded on its own
    and appended, never merged with the header's last token.
    """
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if prethink:
        ids += list(tokenizer.encode(PRETHINK_SUFFIX, add_special_tokens=False))
    return ids
