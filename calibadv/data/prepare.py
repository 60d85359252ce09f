"""QA JSONL (FlashRAG format) → verl RL Parquet.

One table for any mix of benchmarks: ``data_source`` keeps each row's benchmark and
``extra_info.index`` numbers rows across the concatenated inputs, so rollouts and predictions
can be joined back to their question whatever file they came from.

StepSearch's fields: a question whose ``metadata.hops`` lists its sub-questions and their gold
documents (the synthetic world) gets ``extra_info.sub_query_keys`` (one key group per hop, the
hop's sub-question) and, when the corpus is given, ``extra_info.gold_docs`` (the text of the
hops' gold documents). Real QA sets have no hops: both stay empty, and a StepSearch run refuses
the table (:func:`calibadv.methods.stepsearch_reward.check_stepsearch_data`).
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


def hop_fields(meta: Any, docs: dict[str, str] | None) -> tuple[list[str], list[list[str]]]:
    """(gold_docs, sub_query_keys) of a question's ``metadata``: the text of each hop's gold
    documents in hop order (``docs`` maps corpus ids to text; None: no texts), and one key
    group per hop holding its sub-question."""
    hops = meta.get("hops") if isinstance(meta, dict) else None
    if not isinstance(hops, list):
        return [], []
    keys = [[str(h["question"])] for h in hops if isinstance(h, dict) and h.get("question")]
    ids = list(dict.fromkeys(str(d) for h in hops if isinstance(h, dict) for d in h.get("doc_ids") or []))
    return ([docs[d] for d in ids if d in docs] if docs is not None else []), keys


def hop_doc_ids(inputs: list[tuple[str, Path]], limit: int | None = None) -> set[str]:
    """Every gold document id named by the hops of the inputs' questions."""
    out: set[str] = set()
    for _, path in inputs:
        for n, row in enumerate(iter_jsonl(path)):
            if limit is not None and n >= limit:
                break
            meta = row.get("metadata") or {}
            for h in (meta.get("hops") or []) if isinstance(meta, dict) else []:
                out.update(str(d) for d in (h.get("doc_ids") or []) if isinstance(h, dict))
    return out


def corpus_texts(corpus: str | os.PathLike, ids: set[str]) -> dict[str, str]:
    """``contents`` of the corpus documents ``ids`` (one pass over the JSONL corpus)."""
    out = {}
    for doc in iter_jsonl(corpus):
        if str(doc.get("id")) in ids:
            out[str(doc["id"])] = str(doc.get("contents", ""))
    missing = ids - set(out)
    if missing:
        raise CalibAdvError(f"--corpus {corpus}: {len(missing)} gold document ids of the questions' "
                            f"hops are not in the corpus (e.g. {sorted(missing)[0]!r}); give the "
                            "corpus the questions were made from")
    return out


def to_rows(inputs: list[tuple[str, Path]], split: str, limit: int | None = None,
            docs: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """verl rows for every question of every input (first ``limit`` of each input); ``docs``
    (corpus id → text) fills StepSearch's ``gold_docs``."""
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
            gold_docs, sub_query_keys = hop_fields(meta, docs)
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
                               "supporting_ids": [str(s) for s in supporting or []],
                               "gold_docs": gold_docs, "sub_query_keys": sub_query_keys},
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
                                  ("supporting_ids", pa.list_(pa.string())),
                                  ("gold_docs", pa.list_(pa.string())),
                                  ("sub_query_keys", pa.list_(pa.list_(pa.string())))])),
    ])


def write_parquet(rows: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema())
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return atomic_write_bytes(out, buf.getvalue())


def prepare(inputs: list[str], out: str | os.PathLike, split: str = "train",
            limit: int | None = None, corpus: str | os.PathLike | None = None) -> int:
    """Convert and write; returns the number of rows. ``corpus`` (JSONL) gives the gold
    documents' text for StepSearch's ``gold_docs``."""
    if limit is not None and limit <= 0:
        raise CalibAdvError(f"--limit must be positive, got {limit}")
    parsed = parse_inputs(inputs)
    docs = corpus_texts(corpus, hop_doc_ids(parsed, limit)) if corpus else None
    rows = list(to_rows(parsed, split, limit, docs))
    if not rows:
        raise CalibAdvError(f"the inputs {inputs} hold no questions")
    write_parquet(rows, out)
    return len(rows)
