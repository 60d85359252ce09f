"""QA JSONL (FlashRAG format) → verl RL Parquet.

One table for any mix of benchmarks: ``data_source`` keeps each row's benchmark and
``extra_info.index`` numbers rows across the concatenated inputs, so rollouts and predictions
can be joined back to their question whatever file they came from.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from calibadv.data.prompt import build_messages
from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_bytes, iter_jsonl

ABILITY = "fact-reasoning"
_BENCH_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_inputs(specs: Iterable[str]) -> list[tuple[str, Path]]:
    """``["hotpotqa=a.jsonl", …]`` → ``[("hotpotqa", Path("a.jsonl")), …]``, checked."""
    out = []
    for spec in specs:
        bench, sep, path = spec.partition("=")
        if not sep or not bench or not path:
            raise CalibAdvError(f"--input {spec!r} is not BENCH=FILE (e.g. hotpotqa=train.jsonl)")
        if not _BENCH_RE.match(bench):
            raise CalibAdvError(f"--input {spec!r}: benchmark key {bench!r} may only hold "
                                "letters, digits, '_', '-' and '.'")
        if not Path(path).is_file():
            raise CalibAdvError(f"--input {spec!r}: file {path!r} does not exist")
        out.append((bench, Path(path)))
    if not out:
        raise CalibAdvError("no --input given; pass at least one BENCH=FILE")
    return out


def _answers(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise CalibAdvError(f"{where}: 'golden_answers' must be a non-empty list, got {value!r}")
    answers = [str(a).strip() for a in value if str(a).strip()]
    if not answers:
        raise CalibAdvError(f"{where}: every golden answer is empty")
    return answers


def to_rows(inputs: list[tuple[str, Path]], split: str, limit: int | None = None
            ) -> Iterator[dict[str, Any]]:
    """verl rows for every question of every input (first ``limit`` of each input)."""
    index = 0
    for bench, path in inputs:
        for n, row in enumerate(iter_jsonl(path)):
            if limit is not None and n >= limit:
                break
            where = f"{path}: question {n}"
            question = row.get("question")
            if not isinstance(question, str) or not question.strip():
                raise CalibAdvError(f"{where}: missing or empty 'question'")
            meta = row.get("metadata") or {}
            supporting = meta.get("supporting_ids") if isinstance(meta, dict) else None
            yield {
                "data_source": bench,
                "prompt": build_messages(question),
                "ability": ABILITY,
                "reward_model": {"style": "rule",
                                 "ground_truth": {"target": _answers(row.get("golden_answers"),
                                                                     where)}},
                "extra_info": {"index": index, "split": split,
                               "id": str(row.get("id", f"{bench}_{n}")),
                               "question": question.strip(),
                               "supporting_ids": [str(s) for s in supporting or []]},
            }
            index += 1


def schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.struct(
            [("target", pa.list_(pa.string()))]))])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()),
                                  ("id", pa.string()), ("question", pa.string()),
                                  ("supporting_ids", pa.list_(pa.string()))])),
    ])


def write_parquet(rows: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema())
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_write_bytes(out, buf.getvalue())


def prepare(inputs: list[str], out: str | os.PathLike, split: str = "train",
            limit: int | None = None) -> int:
    """Convert and write; returns the number of rows."""
    if limit is not None and limit <= 0:
        raise CalibAdvError(f"--limit must be positive, got {limit}")
    rows = list(to_rows(parse_inputs(inputs), split, limit))
    if not rows:
        raise CalibAdvError(f"the inputs {inputs} hold no questions")
    write_parquet(rows, out)
    return len(rows)
