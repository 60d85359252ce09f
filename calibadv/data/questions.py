"""Questions of a verl Parquet table, in the shape the agent and the trainers need.

The table is the training/evaluation contract (docs/design.md, "verl Parquet"); this module
reads it back into :class:`Question` objects, so every consumer (local trainer, SFT, evaluation,
the StepSearch data check) sees the same fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibadv.errors import ConfigError

__all__ = ["Question", "load_questions"]


@dataclass
class Question:
    """One row of a verl Parquet table, in the shape the agent needs."""

    id: str
    question: str
    messages: list[dict[str, str]]
    golden_answers: list[str]
    data_source: str
    index: int
    supporting_ids: list[str] = field(default_factory=list)
    # StepSearch's fields (``extra_info``; empty for plain QA sets): the gold paragraphs' text
    # and, per sub-query, its key phrasings
    gold_docs: list[str] = field(default_factory=list)
    sub_query_keys: list[list[str]] = field(default_factory=list)

    def stepsearch_fields(self) -> dict[str, Any]:
        return {"gold_docs": self.gold_docs, "sub_query_keys": self.sub_query_keys}


def _plain(value: Any) -> Any:
    """numpy arrays / nested structures from Parquet → plain Python lists and dicts."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_questions(path: str | os.PathLike, limit: int | None = None) -> list[Question]:
    """Read a verl-format Parquet file (docs/design.md) into :class:`Question` objects."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"data file {path} does not exist (make it with calibadv prepare-data)")
    frame = pd.read_parquet(path)
    missing = {"data_source", "prompt", "reward_model", "extra_info"} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: not a verl Parquet table, missing columns {sorted(missing)}")
    if limit is not None:
        frame = frame.iloc[:limit]
    out = []
    for row in frame.itertuples(index=False):
        extra = _plain(row.extra_info) or {}
        truth = _plain(row.reward_model)["ground_truth"]
        golds = truth["target"] if isinstance(truth, dict) else truth
        out.append(
            Question(
                id=str(extra.get("id", extra.get("index"))),
                question=str(extra.get("question", "")),
                messages=_plain(row.prompt),
                golden_answers=[str(g) for g in (golds if isinstance(golds, list) else [golds])],
                data_source=str(row.data_source),
                index=int(extra.get("index", len(out))),
                supporting_ids=[str(s) for s in extra.get("supporting_ids") or []],
                gold_docs=[str(d) for d in extra.get("gold_docs") or []],
                sub_query_keys=[[str(k) for k in g] for g in extra.get("sub_query_keys") or []],
            )
        )
    return out
