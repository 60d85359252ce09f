"""Hand-made rollout-dump rows (the format of docs/design.md) for the judge tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def rollout(question: str, steps: list[tuple[str, list[str], float | None]], *,
            gold: list[str] = (), qid: str = "q", group: int = 0, advantage: float = -1.0,
            answers: list[str] = ("Ann",)) -> dict[str, Any]:
    """One rollout: ``steps`` = (query, doc ids, c) per intermediate step, then an answer."""
    text, thinks, queries, docs, cs = "", [], [], [], []
    for k, (query, ids, c) in enumerate(steps):
        think = f"think {k} about {query or 'nothing'}"
        thinks.append(think)
        queries.append(query)
        docs.append(list(ids))
        cs.append(c)
        if query:
            passages = "\n".join(f"Doc {i}(Title: {d}) text of {d}" for i, d in enumerate(ids, 1))
            text += f"<think>{think}</think><search>{query}</search>\n\n<information>{passages}</information>\n\n"
        else:
            text += f"<think>{think}</think> no action"
    thinks.append("done")
    text += "<think>done</think><answer>Ann</answer>"
    return {
        "question": question, "golden_answers": list(answers), "question_id": qid,
        "group": group, "advantage": advantage, "queries": queries, "doc_ids": docs,
        "thinks": thinks, "response_text": text, "supporting_ids": list(gold),
        "c": None if all(c is None for c in cs) else cs, "silver_ids": [],
        "turn_spans": [[10 * k, 10 * k + 5] for k in range(len(steps) + 1)],
    }


def write_dumps(folder: Path, dumps: dict[int, list[dict[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for step, rows in dumps.items():
        with open(folder / f"step_{step:06d}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return folder
