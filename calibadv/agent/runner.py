"""Glue shared by training, SFT and evaluation: questions, policies, search and scoring.

Everything here sits between the pure protocol and the files: it reads the verl Parquet
format, loads a HF policy, connects to the retrieval server and scores finished rollouts
with :func:`calibadv.reward.compute_score`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibadv.agent.protocol import AgentState, run_batch
from calibadv.agent.types import AgentConfig, GenerateFn, SearchFn, Trajectory
from calibadv.errors import CalibAdvError, ConfigError


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


def load_policy(path: str | os.PathLike, dtype: str = "float32", device: str | None = None):
    """Load a HF causal LM and its tokenizer (pad token set, left padding for generation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).exists():
        raise ConfigError(f"model directory {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer


def agent_config(spec: Any, prethink: bool) -> AgentConfig:
    a = spec.agent
    return AgentConfig(
        max_turns=a.max_turns,
        max_tokens_per_turn=a.max_tokens_per_turn,
        max_response_tokens=a.max_response_tokens,
        invalid_action=a.invalid_action,
        prethink=prethink,
    )


def method_flags(method: dict[str, Any]) -> tuple[bool, bool]:
    """(prethink, require_search) of a resolved method preset."""
    return bool(method.get("prethink", False)), bool(method.get("require_search", False))


def prompt_token_ids(tokenizer: Any, question: Question, prethink: bool) -> list[int]:
    from calibadv.data.prompt import prompt_ids

    return list(prompt_ids(tokenizer, question.messages, prethink))


def rollout(
    questions: Sequence[Question],
    tokenizer: Any,
    config: AgentConfig,
    generate_fn: GenerateFn,
    search_fn: SearchFn,
    group_size: int = 1,
    progress: Any = None,
) -> list[Trajectory]:
    """``group_size`` rollouts per question, grouped contiguously (question-major order)."""
    states = []
    for q in questions:
        ids = prompt_token_ids(tokenizer, q, config.prethink)
        states.extend(AgentState(ids, tokenizer, config) for _ in range(group_size))
    return run_batch(states, generate_fn, search_fn, progress=progress)


def score(traj: Trajectory, question: Question, prethink: bool, require_search: bool) -> None:
    """Fill the reward fields of ``traj`` in place (gated F1, F1, EM, format)."""
    from calibadv.reward import compute_score

    result = compute_score(
        question.data_source,
        traj.response_text,
        {"target": question.golden_answers},
        None,
        prethink=prethink,
        require_search=require_search,
    )
    traj.reward = float(result["score"])
    traj.f1 = float(result["f1"])
    traj.em = float(result["em"])
    traj.format_ok = bool(result["format_ok"])


def make_search_fn(url: str, topk: int, chunk: int = 256) -> SearchFn:
    from calibadv.retrieval.client import RetrievalClient

    client = RetrievalClient(url)

    def search(queries: Sequence[str]) -> list[list[Any]]:
        out: list[list[Any]] = []
        for i in range(0, len(queries), chunk):  # servers cap the queries per request
            out += client.search(list(queries[i : i + chunk]), topk)
        return out

    return search


@contextlib.contextmanager
def retrieval_url(retrieval: Any) -> Iterator[str]:
    """The spec's server URL, or a server started here from its corpus/index/encoder."""
    if retrieval.url:
        yield retrieval.url
        return
    needed = {"corpus": retrieval.corpus, "index": retrieval.index, "encoder": retrieval.encoder}
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise ConfigError(
            f"retrieval: set retrieval.url, or retrieval.{missing[0]} (with corpus, index and "
            "encoder) so that a server can be started"
        )
    from calibadv.retrieval.launch import serve, spec_server_args

    try:
        ctx = serve(
            retrieval.server,
            retrieval.corpus,
            retrieval.index,
            retrieval.encoder,
            reranker=retrieval.reranker,
            port=retrieval.port,
            extra_args=spec_server_args(retrieval),
        )
    except FileNotFoundError as err:
        raise CalibAdvError(f"retrieval server could not start: {err}") from err
    with ctx as url:
        yield url
