"""Intermediate steps as the judge sees them, read from rollouts; and the proxy-validation sample.

A rollout (a Trajectory dict of a rollout dump, or the same fields of a live batch) holds per
intermediate step t: ``queries[t]``, ``doc_ids[t]``, ``thinks[t]``, and in ``response_text``
the observation the agent read after each search. :func:`step_views` turns one rollout into
:class:`~calibadv.judge.prompt.StepView` objects; :func:`sample_cases` draws the paper's
validation sample (N steps with c = 1 per dumped checkpoint) and attaches, on the synthetic
world, the gold truth of each sampled step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibadv.errors import CalibAdvError
from calibadv.judge.prompt import StepView

# An observation follows the search that asked for it (the agent's own text could contain
# the tag inside a think; anchoring on </search> keeps those out).
_OBSERVATION = re.compile(r"</search>\s*<information>(.*?)</information>", re.DOTALL)


def observations(rollout: Mapping[str, Any]) -> list[str]:
    """Passages text after each intermediate step ("" where the step searched nothing).

    The k-th observation belongs to the k-th step with a non-empty query (the protocol
    appends one per valid search, in order); steps beyond the observations found (cut off by
    the length budget) get "".
    """
    blocks = [b.strip() for b in _OBSERVATION.findall(rollout.get("response_text") or "")]
    out: list[str] = []
    k = 0
    for query in rollout.get("queries") or []:
        if query and k < len(blocks):
            out.append(blocks[k])
            k += 1
        else:
            out.append("")
    return out


def step_views(rollout: Mapping[str, Any]) -> list[StepView]:
    """One :class:`StepView` per intermediate step of ``rollout`` (same order as ``doc_ids``)."""
    queries = list(rollout.get("queries") or [])
    thinks = list(rollout.get("thinks") or [])
    obs = observations(rollout)
    n = len(rollout.get("doc_ids") or [])
    golds = rollout.get("golden_answers") or []
    views = []
    for t in range(n):
        views.append(StepView(
            question=str(rollout.get("question", "")),
            golden_answers=[str(g) for g in (golds if isinstance(golds, list) else [golds])],
            think=thinks[t] if t < len(thinks) else "",
            query=queries[t] if t < len(queries) else "",
            passages=obs[t] if t < len(obs) else "",
            earlier_queries=tuple(queries[:t]),
            step_number=t + 1,
        ))
    return views


# --------------------------------------------------------------------------- gold truth


def gold_truth(rollout: Mapping[str, Any], t: int,
               hops: Sequence[Sequence[str]] | None = None) -> dict[str, bool] | None:
    """Whether step t retrieved a gold passage, and whether it advanced a hop.

    "Advanced a hop": the step retrieved a gold passage of a hop that no earlier step of the
    rollout had reached (with the question's hop structure, ``metadata.hops``); without hops,
    a gold passage no earlier step had retrieved. None when the rollout carries no gold.
    """
    gold = {str(s) for s in rollout.get("supporting_ids") or []}
    if not gold:
        return None
    docs = rollout.get("doc_ids") or []
    mine = {str(d) for d in docs[t]}
    before = {str(d) for step in docs[:t] for d in step}
    hit = bool(mine & gold)
    if hops:
        hop_sets = [{str(d) for d in h} for h in hops]
        advanced = any(h & mine and not h & before for h in hop_sets)
    else:
        advanced = bool((mine & gold) - before)
    return {"hit": hit, "advanced": advanced}


# --------------------------------------------------------------------------- the sample


@dataclass
class Case:
    """One sampled step: what the judge and the annotator see, and what we know about it."""

    case_id: str
    step: int  # training step of the dump
    rollout: int  # line of the dump
    turn: int  # 0-based intermediate step
    question_id: str
    question: str
    golden_answers: list[str]
    think: str
    query: str
    passages: str
    earlier_queries: list[str]
    doc_ids: list[str]
    c: float | None  # None: the step's group was not scored (pool "searched")
    gold: dict[str, bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def view(self) -> StepView:
        return StepView(self.question, self.golden_answers, self.think, self.query,
                        self.passages, tuple(self.earlier_queries), self.turn + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Case:
        return cls(**dict(data))


#: Which steps the validation sample draws from (``judge.sample.steps``).
POOLS = ("scored", "searched")


def candidates(rows: Sequence[Mapping[str, Any]], min_c: float,
               pool: str = "scored") -> list[tuple[int, int]]:
    """(rollout, step) of the intermediate steps that searched something and, with
    ``pool="scored"`` (the paper), have c >= ``min_c``; ``pool="searched"`` takes every
    searched step whatever its c (also unscored ones, c = None)."""
    if pool not in POOLS:
        raise CalibAdvError(f"judge.sample.steps: {pool!r} is not one of {list(POOLS)}")
    out = []
    for i, row in enumerate(rows):
        cs = row.get("c") or []
        docs = row.get("doc_ids") or []
        queries = row.get("queries") or []
        for t, ids in enumerate(docs):
            if not ids or (t < len(queries) and not queries[t]):
                continue
            c = cs[t] if t < len(cs) else None
            if pool == "searched" or (c is not None and float(c) >= min_c - 1e-9):
                out.append((i, t))
    return out


def sample_cases(
    dumps: Mapping[int, Sequence[Mapping[str, Any]]],
    per_checkpoint: int,
    seed: int,
    min_c: float = 1.0,
    hops_of: Mapping[str, Sequence[Sequence[str]]] | None = None,
    pool: str = "scored",
) -> list[Case]:
    """``per_checkpoint`` steps with c >= ``min_c`` from each dump (fewer when fewer exist);
    ``pool="searched"`` draws from every searched step instead (see :func:`candidates`).

    Seeded per checkpoint (``numpy.random.default_rng([seed, step])``), so adding a dump never
    changes the sample of another. Cases come out by step, then rollout, then turn.
    """
    if per_checkpoint < 1:
        raise CalibAdvError(f"judge.sample.per_checkpoint must be >= 1, got {per_checkpoint}")
    if not dumps:
        raise CalibAdvError("no rollout dumps to sample from (set training.dump_rollouts_at)")
    cases: list[Case] = []
    for step in sorted(dumps):
        rows = dumps[step]
        found = candidates(rows, min_c, pool)
        rng = np.random.default_rng([seed, step])
        k = min(per_checkpoint, len(found))
        chosen = sorted(rng.choice(len(found), size=k, replace=False).tolist()) if k else []
        for j in chosen:
            i, t = found[j]
            row = rows[i]
            view = step_views(row)[t]
            qid = str(row.get("question_id", ""))
            hops = (hops_of or {}).get(qid)
            cases.append(Case(
                case_id=f"s{step}-r{i}-t{t}", step=int(step), rollout=i, turn=t,
                question_id=qid, question=view.question,
                golden_answers=list(view.golden_answers), think=view.think, query=view.query,
                passages=view.passages, earlier_queries=list(view.earlier_queries),
                doc_ids=[str(d) for d in row["doc_ids"][t]], c=_c_of(row, t),
                gold=gold_truth(row, t, hops),
            ))
    return cases


def _c_of(row: Mapping[str, Any], t: int) -> float | None:
    cs = row.get("c") or []
    return float(cs[t]) if t < len(cs) and cs[t] is not None else None


def hops_from_qa(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[list[str]]]:
    """``{question id: [gold doc ids of each hop]}`` from QA JSONL rows (synthetic world)."""
    out = {}
    for row in rows:
        hops = (row.get("metadata") or {}).get("hops") or []
        if hops:
            out[str(row["id"])] = [[str(d) for d in h.get("doc_ids") or []] for h in hops]
    return out
