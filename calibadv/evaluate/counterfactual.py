"""The counterfactual update's measurements: per-step Δ log-prob, classed, with intervals.

The paper's mechanism claim is about intermediate steps: GRPO's negative advantage pushes
down the useful search steps of failed rollouts, and CalibAdv stops that. The synthetic world
knows which steps were useful (their retrieval hit a gold passage), so the claim can be asked
directly: from one start point, apply each method's update to the same batch and read, on
trajectories the update never saw, how each step's log-probability moved
(:mod:`calibadv.train.counterfactual` runs the updates; this module is the arithmetic).

A *step* is an intermediate turn: one that issued a search (``queries[t]`` non-empty). Its
value is the mean log-probability of its generated tokens (``loss_mask = 1`` inside its
``turn_spans`` entry). Its class: whether its retrieval hit a gold passage of the question
(``supporting_ids``), and whether its rollout answered right (exact match). The units of
resampling are questions: the steps of one question's rollouts share the question, so the
bootstrap draws questions (:func:`calibadv.evaluate.intervals.cluster_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from calibadv.evaluate.intervals import Boot, cluster_bootstrap, holm

CLASSES = ("gold, right", "gold, wrong", "no gold, right", "no gold, wrong")
ALL = "all steps"


@dataclass(frozen=True)
class StepUnit:
    """One intermediate step: its question (the resampling group), rollout row and turn, and
    its class."""

    group: str
    row: int
    turn: int
    gold: bool
    right: bool

    @property
    def cls(self) -> str:
        return f"{'gold' if self.gold else 'no gold'}, {'right' if self.right else 'wrong'}"


def step_units(rollouts: Sequence[Mapping[str, Any]]) -> list[StepUnit]:
    """The intermediate steps of ``rollouts`` (dicts with ``question_id``, ``turn_spans``,
    ``queries``, ``doc_ids``, ``supporting_ids``, ``em``), in row then turn order."""
    units = []
    for row, r in enumerate(rollouts):
        gold = {str(s) for s in r.get("supporting_ids") or []}
        queries, docs = r.get("queries") or [], r.get("doc_ids") or []
        n_turns = len(r.get("turn_spans") or [])
        for t in range(min(n_turns, len(queries))):
            if not queries[t]:
                continue
            hit = bool(gold & {str(d) for d in (docs[t] if t < len(docs) else [])})
            units.append(StepUnit(str(r["question_id"]), row, t, hit, float(r.get("em", 0)) >= 1))
    return units


def step_mean_logp(logp: Sequence[float], loss_mask: Sequence[int],
                   span: Sequence[int]) -> float | None:
    """Mean log-prob over the generated tokens (mask 1) of response slots ``span = [start,
    end)``; None for a turn with no generated token."""
    vals = [float(logp[k]) for k in range(span[0], span[1]) if loss_mask[k]]
    return sum(vals) / len(vals) if vals else None


def unit_logps(units: Sequence[StepUnit], rollouts: Sequence[Mapping[str, Any]],
               logp_rows: Sequence[Sequence[float]]) -> list[float | None]:
    """Each unit's step mean log-prob under one model: ``logp_rows[row][k]`` is response slot
    k's log-prob (teacher-forced)."""
    return [step_mean_logp(logp_rows[u.row], rollouts[u.row]["loss_mask"],
                           rollouts[u.row]["turn_spans"][u.turn]) for u in units]


def deltas(before: Sequence[float | None], after: Sequence[float | None]) -> list[float | None]:
    """Per unit, after − before (None where either is None)."""
    return [None if a is None or b is None else a - b for b, a in zip(before, after, strict=True)]


def _by_group(units: Sequence[StepUnit], values: Sequence[float | None],
              cls: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for u, v in zip(units, values, strict=True):
        if v is not None and (cls == ALL or u.cls == cls):
            out.setdefault(u.group, []).append(v)
    return out


@dataclass(frozen=True)
class DeltaRow:
    """One (method, class) cell: the mean Δ log-prob with its question-bootstrap interval and,
    beside the reference (GRPO), the paired difference on the same steps with its Holm-adjusted
    p-value over the table's family."""

    method: str
    cls: str
    n_steps: int
    n_groups: int
    delta: Boot | None
    vs_ref: Boot | None = None
    p_holm: float | None = None
    survives: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def summarise(units: Sequence[StepUnit], method_deltas: Mapping[str, Sequence[float | None]],
              reference: str, reps: int = 2000, seed: int = 0) -> list[DeltaRow]:
    """Per method and class (and all steps), the mean Δ with a bootstrap over questions; each
    non-reference method's paired difference Δ_method − Δ_reference on the same steps, Holm
    over the (method, class) family of those differences."""
    if reference not in method_deltas:
        raise ValueError(f"reference method {reference!r} not among {sorted(method_deltas)}")
    rows: list[DeltaRow] = []
    pvals: dict[str, float] = {}
    ref = method_deltas[reference]
    for method, ds in method_deltas.items():
        for cls in (ALL, *CLASSES):
            groups = _by_group(units, ds, cls)
            boot = cluster_bootstrap(groups, reps=reps, seed=seed)
            paired = None
            if method != reference:
                diff = [None if a is None or b is None else a - b
                        for a, b in zip(ds, ref, strict=True)]
                paired = cluster_bootstrap(_by_group(units, diff, cls), reps=reps, seed=seed)
                if paired is not None:
                    pvals[f"{method}|{cls}"] = paired.p
            rows.append(DeltaRow(method, cls, sum(len(v) for v in groups.values()), len(groups),
                                 boot, paired))
    adjusted = holm(pvals)
    return [DeltaRow(r.method, r.cls, r.n_steps, r.n_groups, r.delta, r.vs_ref,
                     *adjusted.get(f"{r.method}|{r.cls}", (None, None))) for r in rows]
