"""GRPO advantages and their CalibAdv calibration (torch, vectorised over tokens).

``grpo_advantage`` reproduces verl's ``compute_grpo_outcome_advantage`` (same float32
arithmetic, so the two agree to the bit on the group statistics). ``calibrate`` then, per
group: builds the silver-document set, scores every intermediate step (c in [0, 1]), softens
the negative advantage of likely-correct steps, and rebalances the answer step's positive and
negative advantage mass. The per-step set logic is plain Python over rollouts and steps (a
few thousand small set operations); every (batch, length) tensor operation is vectorised,
and the token tensor is written in one pass from per-segment values.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from rapidfuzz.distance import Levenshtein

from calibadv.errors import ConfigError, check_known_keys

if TYPE_CHECKING:  # torch is imported where it is used: method presets are validated while
    import torch  # Snakemake parses the DAG, and importing torch costs seconds there

__all__ = [
    "CalibConfig",
    "StepScorer",
    "register_scorer",
    "scorer_names",
    "grpo_advantage",
    "group_codes",
    "think_similarity",
    "calibrate",
]


# --------------------------------------------------------------------------- config
_CHOICES: dict[str, tuple[str, ...]] = {
    "silver_mode": ("best", "all_correct"),
    "soft_penalty": ("none", "soft", "uniform"),
    "alpha_convention": ("paper", "authors"),
    "rebalance_sum": ("token", "rollout"),
}


@dataclass(frozen=True)
class CalibConfig:
    """Every switch of the calibration; the defaults are the CalibAdv method (paper Table 2)."""

    silver_mode: str = "best"  # best (authors' code) | all_correct (paper text)
    tau: float = 0.7  # a silver-source rollout needs reward >= tau
    score: str = "official"  # official | paper | judge (see register_scorer)
    soft_penalty: str = "soft"  # none | soft (A·(1−c)) | uniform (A·uniform_factor)
    uniform_factor: float = 0.5
    rebalance: bool = True
    alpha: float = 1.0
    alpha_convention: str = "paper"  # paper: positive side = α·N | authors: N / α
    rebalance_sum: str = "token"  # token (longer answers weigh more) | rollout
    norm_by_std: bool = True
    eps: float = 1e-6
    think_similarity: float = 0.5  # official score: c = 0 above this word-level edit similarity
    doc_overlap: int = 2  # official score: c = 0 when sharing >= this many ids with an earlier step

    def __post_init__(self) -> None:
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ConfigError(f"calibration.{key} = {value!r} is not one of {list(choices)}")
        if self.score not in _SCORERS:
            raise ConfigError(
                f"calibration.score = {self.score!r} is not a registered step scorer; "
                f"choose one of {scorer_names()}"
            )
        _check_number("tau", self.tau, 0.0, 1.0)
        _check_number("uniform_factor", self.uniform_factor, 0.0, 1.0)
        _check_number("think_similarity", self.think_similarity, 0.0, 1.0)
        _check_number("alpha", self.alpha, 0.0, math.inf, low_open=True)
        _check_number("eps", self.eps, 0.0, math.inf, low_open=True)
        for key in ("rebalance", "norm_by_std"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"calibration.{key} must be true or false, got {getattr(self, key)!r}")
        if isinstance(self.doc_overlap, bool) or not isinstance(self.doc_overlap, int) or self.doc_overlap < 1:
            raise ConfigError(f"calibration.doc_overlap must be an integer >= 1, got {self.doc_overlap!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "calibration") -> CalibConfig:
        """Build from a mapping; unknown keys and bad values raise ConfigError naming ``where.key``."""
        data = dict(data or {})
        check_known_keys(data, (f.name for f in dataclasses.fields(cls)), where)
        for key in ("tau", "uniform_factor", "think_similarity", "alpha", "eps"):
            if key in data and isinstance(data[key], int) and not isinstance(data[key], bool):
                data[key] = float(data[key])
        try:
            return cls(**data)
        except ConfigError as err:
            raise ConfigError(str(err).replace("calibration.", f"{where}.", 1)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_number(key: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ConfigError(f"calibration.{key} = {value!r} must be a number in {bound}")


# --------------------------------------------------------------------------- step scorers
@dataclass(frozen=True)
class StepScorer:
    """Scores the intermediate steps of one rollout.

    ``fn(doc_ids, thinks, silver, config, judge)`` returns one ``(a, k)`` pair per step:
    c = a / k (k = 0 means c = 0); integers keep the ``a/k`` histogram exact. ``needs_silver``
    scorers only run in groups with a non-empty silver set; others run in every group.
    """

    fn: Callable[..., list[tuple[int, int]]]
    needs_silver: bool = True


_SCORERS: dict[str, StepScorer] = {}


def register_scorer(name: str, needs_silver: bool = True) -> Callable[[Callable], Callable]:
    """Register a step scorer under ``calibration.score: <name>``."""

    def deco(fn: Callable) -> Callable:
        _SCORERS[name] = StepScorer(fn, needs_silver)
        return fn

    return deco


def scorer_names() -> list[str]:
    return sorted(_SCORERS)


def think_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Word-level edit similarity 1 − lev(a, b) / max(|a|, |b|); 0 when either is empty."""
    if not a or not b:
        return 0.0
    return Levenshtein.normalized_similarity(a, b)


@register_scorer("paper")
def _score_paper(doc_ids, thinks, silver, config, judge) -> list[tuple[int, int]]:
    """Paper: share of the step's documents that are silver (each id once)."""
    return [(len(silver.intersection(docs)), len(docs)) for docs in doc_ids]


@register_scorer("official")
def _score_official(doc_ids, thinks, silver, config, judge) -> list[tuple[int, int]]:
    """Authors' code: only *newly* retrieved silver documents count (each id once), and a step
    that repeats an earlier one (similar think, or >= doc_overlap ids shared with one earlier
    step) scores 0."""
    out: list[tuple[int, int]] = []
    seen: set[str] = set()
    earlier: list[set[str]] = []
    words: list[list[str] | None] = [None] * len(doc_ids)
    overlap, cutoff = config.doc_overlap, config.think_similarity
    for t, docs in enumerate(doc_ids):
        current = set(docs)
        a = len((current & silver) - seen) if t else len(current & silver)
        if a and t:
            for prev in earlier:
                if len(current & prev) >= overlap:
                    a = 0
                    break
            if a and _repeats_earlier(words, thinks, t, cutoff):
                a = 0
        out.append((a, len(docs)))
        seen |= current
        earlier.append(current)
    return out


def _repeats_earlier(words: list[list[str] | None], thinks: Sequence[str], t: int, cutoff: float) -> bool:
    """Whether think t has word-level edit similarity > cutoff with an earlier think.

    Thinks are split on first use (``words`` caches them). Similarity can't exceed
    min(len)/max(len), so many pairs are settled by their lengths before any edit distance.
    """
    for s in range(t + 1):
        if words[s] is None:
            words[s] = thinks[s].split() if s < len(thinks) else []
    mine = words[t]
    n = len(mine)
    if not n:
        return False
    for s in range(t):
        other = words[s]
        m = len(other)
        if m and (n > cutoff * m if n < m else m > cutoff * n):
            if Levenshtein.normalized_similarity(mine, other, score_cutoff=cutoff) > cutoff:
                return True
    return False


@register_scorer("judge", needs_silver=False)
def _score_judge(doc_ids, thinks, silver, config, judge) -> list[tuple[int, int]]:
    """LLM-judge scores (paper Table 3), computed outside and passed as ``judge_scores``."""
    pairs = []
    for c in judge:
        frac = Fraction(float(c)).limit_denominator(1000)
        pairs.append((frac.numerator, frac.denominator))
    return pairs


# --------------------------------------------------------------------------- GRPO
def group_codes(group_index: Any) -> tuple[list[int], list[Any]]:
    """Dense codes 0..G-1 in order of first appearance, and the original id of each code.

    Accepts ints or strings (verl passes uid strings), as a list, numpy array or tensor.
    """
    if hasattr(group_index, "tolist"):
        group_index = group_index.tolist()
    mapping: dict[Any, int] = {}
    codes = [mapping.setdefault(g, len(mapping)) for g in group_index]
    return codes, list(mapping)


def _group_stats(scores: torch.Tensor, codes: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean and unbiased std with verl's arithmetic (singletons: mean 0, std 1).

    Groups are bucketed by size and reduced row-wise, which matches the 1-D reductions verl
    runs per group; all-equal groups are re-reduced 1-D because torch's row-wise and 1-D std
    can round a zero spread differently, and verl's rounding there is what GRPO sees.
    """
    import torch

    device, dtype = scores.device, scores.dtype
    sizes = torch.bincount(codes, minlength=num_groups)
    order = torch.argsort(codes, stable=True)
    offsets = torch.cumsum(sizes, 0) - sizes
    mean = torch.zeros(num_groups, dtype=dtype, device=device)
    std = torch.ones(num_groups, dtype=dtype, device=device)
    for n in torch.unique(sizes).tolist():
        if n < 2:
            continue
        rows = torch.nonzero(sizes == n).squeeze(1)
        members = order[offsets[rows, None] + torch.arange(n, device=device)]
        mat = scores[members]
        mean[rows] = mat.mean(dim=1)
        std[rows] = mat.std(dim=1)
        flat = (mat == mat[:, :1]).all(dim=1) & (mat[:, 0] != 0)
        for r in torch.nonzero(flat).squeeze(1).tolist():
            std[rows[r]] = torch.std(mat[r])
    return mean, std


def grpo_advantage(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: Any,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """(batch, length) GRPO advantages, equal to verl's ``compute_grpo_outcome_advantage``.

    ``scores`` is one reward per rollout, shape (batch,), or token-level rewards (batch,
    length) that are summed as verl does. A group of one gets mean 0 and std 1 (verl's rule),
    so its advantage is its reward; the std is the unbiased one.
    """
    rollout_adv = _rollout_advantage(scores, group_index, norm_by_std, eps)[0]
    return rollout_adv.unsqueeze(-1) * response_mask


def _rollout_advantage(
    scores: torch.Tensor, group_index: Any, norm_by_std: bool, eps: float
) -> tuple[torch.Tensor, list[int], list[Any]]:
    import torch

    if scores.dim() == 2:
        scores = scores.sum(dim=-1)
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (batch,) or (batch, length), got {tuple(scores.shape)}")
    codes, groups = group_codes(group_index)
    if len(codes) != scores.shape[0]:
        raise ValueError(f"group_index has {len(codes)} entries for {scores.shape[0]} rollouts")
    code_t = torch.tensor(codes, dtype=torch.long, device=scores.device)
    mean, std = _group_stats(scores, code_t, len(groups))
    adv = scores - mean[code_t]
    if norm_by_std:
        adv = adv / (std[code_t] + eps)
    return adv, codes, groups


# --------------------------------------------------------------------------- calibration
def _silver_sets(
    rewards: list[float],
    format_ok: list[bool],
    codes: list[int],
    num_groups: int,
    doc_ids: Sequence[Sequence[Sequence[str]]],
    config: CalibConfig,
) -> list[frozenset[str]]:
    """Per group, the ids retrieved (any turn) by its silver-source rollouts."""
    group_max = [-math.inf] * num_groups
    for r, g in zip(rewards, codes):
        if r > group_max[g]:
            group_max[g] = r
    best_only = config.silver_mode == "best"
    silver: list[set[str]] = [set() for _ in range(num_groups)]
    for i, (r, g) in enumerate(zip(rewards, codes)):
        if format_ok[i] and r >= config.tau and (not best_only or r == group_max[g]):
            target = silver[g]
            for docs in doc_ids[i]:
                target.update(docs)
    return [frozenset(s) for s in silver]


def _bools(values: Any, n: int, name: str) -> list[bool]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    values = [bool(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} rollouts")
    return values


def calibrate(
    scores: torch.Tensor,
    format_ok: Any,
    response_mask: torch.Tensor,
    group_index: Any,
    turn_spans: Sequence[Sequence[Sequence[int]]],
    doc_ids: Sequence[Sequence[Sequence[str]]],
    thinks: Sequence[Sequence[str]],
    config: CalibConfig | None = None,
    judge_scores: Sequence[Sequence[float]] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CalibAdv advantages (batch, length) and the per-step signals.

    Rollout i: ``turn_spans[i]`` = [start, end) of each generated turn in the response,
    ``doc_ids[i][t]`` = ids retrieved by intermediate step t, ``thinks[i]`` = think text of
    each turn; it has an answer step iff ``len(turn_spans[i]) == len(doc_ids[i]) + 1`` (the
    last span). ``judge_scores[i][t]`` in [0, 1] feeds ``score: judge``; ``judge_scores[i] =
    None`` leaves rollout i unscored (its steps keep the GRPO advantage).

    Tokens outside every turn span keep the GRPO advantage; masked tokens are 0.
    """
    import torch

    config = config or CalibConfig()
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask must be (batch, length), got {tuple(response_mask.shape)}")
    batch, length = response_mask.shape
    device = response_mask.device
    scores = torch.as_tensor(scores, device=device)
    if not scores.is_floating_point():
        scores = scores.float()
    adv_t, codes, groups = _rollout_advantage(scores, group_index, config.norm_by_std, config.eps)
    num_groups = len(groups)
    for name, seq in (("turn_spans", turn_spans), ("doc_ids", doc_ids), ("thinks", thinks)):
        if len(seq) != batch:
            raise ValueError(f"{name} has {len(seq)} entries for {batch} rollouts")
    ok = _bools(format_ok, batch, "format_ok")
    rewards = (scores.sum(-1) if scores.dim() == 2 else scores).tolist()
    adv = adv_t.tolist()
    scorer = _SCORERS[config.score]
    if not scorer.needs_silver:
        _check_judge(judge_scores, doc_ids, config)
    silver = _silver_sets(rewards, ok, codes, num_groups, doc_ids, config)
    spans = [_clean_spans(i, turn_spans[i], len(doc_ids[i]), length) for i in range(batch)]

    # ---- per step: score c and the penalty multiplier of negative rollouts --------------
    multipliers: list[list[float] | None] = [None] * batch
    per_step_c: list[list[float] | None] = [None] * batch
    hist: Counter[tuple[int, int]] = Counter()
    c_sum = 0.0
    n_steps = n_neg_scored = n_neg_c1 = 0
    for i in range(batch):
        docs = doc_ids[i]
        n_steps += len(docs)
        group_silver = silver[codes[i]]
        if not docs or not (group_silver or not scorer.needs_silver):
            continue
        judge = judge_scores[i] if judge_scores is not None else None
        if judge is None and not scorer.needs_silver:
            continue  # a rollout the judge was not asked about (e.g. not negative): unscored
        pairs = scorer.fn(docs, thinks[i], group_silver, config, judge)
        hist.update(pairs)
        cs = [a / k if k else 0.0 for a, k in pairs]
        per_step_c[i] = cs
        c_sum += sum(cs)
        if adv[i] < 0:
            n_neg_scored += len(cs)
            n_neg_c1 += sum(c == 1.0 for c in cs)
            multipliers[i] = _PENALTIES[config.soft_penalty](cs, config)

    answer_scale = _rebalance_scales(adv, codes, num_groups, spans, doc_ids, response_mask, config)

    # ---- token tensor: GRPO broadcast, then only the changed spans are rescaled --------
    seg_start: list[int] = []
    seg_len: list[int] = []
    seg_mult: list[float] = []
    n_changed = 0
    for i in range(batch):
        mult = multipliers[i]
        if mult is not None:
            row = i * length
            for (start, end), m in zip(spans[i], mult):
                if m != 1.0:
                    n_changed += 1
                    seg_start.append(row + start)
                    seg_len.append(end - start)
                    seg_mult.append(m)
    for i, m in answer_scale.items():
        start, end = spans[i][-1]
        seg_start.append(i * length + start)
        seg_len.append(end - start)
        seg_mult.append(m)
    out = adv_t.unsqueeze(-1) * response_mask
    if seg_len:
        _scale_segments(out.view(-1), seg_start, seg_len, seg_mult)

    # ---- signals: every row keeps the sign of its A_i, so row sums split neg/pos --------
    before = adv_t * response_mask.sum(dim=1).to(adv_t.dtype)
    after = out.sum(dim=1)
    n_scored = sum(len(c) for c in per_step_c if c is not None)
    stats: dict[str, Any] = {
        "empty_silver_frac": sum(not s for s in silver) / num_groups if num_groups else 0.0,
        "softpen_frac": n_changed / n_steps if n_steps else 0.0,
        "penalised_c1_frac": n_neg_c1 / n_neg_scored if n_neg_scored else None,
        "c_mean": c_sum / n_scored if n_scored else None,
        "c_hist": _c_hist(hist, n_scored),
        "negpos_ratio_before": _negpos(before),
        "negpos_ratio_after": _negpos(after),
        "num_scored_steps": n_scored,
        "per_step_c": per_step_c,
        "silver_sets": {groups[g]: sorted(s) for g, s in enumerate(silver)},
        "rollout_advantage": adv,
    }
    return out, stats


# Penalty multipliers for the intermediate steps of a negative rollout, by soft_penalty.
_PENALTIES: dict[str, Callable[[list[float], CalibConfig], list[float] | None]] = {
    "none": lambda cs, config: None,
    "soft": lambda cs, config: [1.0 - c for c in cs],
    "uniform": lambda cs, config: [config.uniform_factor] * len(cs),
}


def _scale_segments(flat: torch.Tensor, starts: list[int], lens: list[int], mults: list[float]) -> None:
    """Multiply ``flat[start:start+len]`` by its factor, for every segment, in one gather/scatter."""
    import torch

    device = flat.device
    lens_t = torch.tensor(lens, dtype=torch.long, device=device)
    total = int(sum(lens))
    which = torch.repeat_interleave(torch.arange(len(lens), device=device), lens_t, output_size=total)
    offset = torch.tensor(starts, dtype=torch.long, device=device) - (torch.cumsum(lens_t, 0) - lens_t)
    idx = offset.index_select(0, which).add_(torch.arange(total, device=device))
    factor = torch.tensor(mults, dtype=flat.dtype, device=device).index_select(0, which)
    flat.index_copy_(0, idx, flat.index_select(0, idx).mul_(factor))


def _negpos(row_sums: torch.Tensor) -> float | None:
    """Σ|negative| / Σpositive (None when nothing is positive)."""
    pos = row_sums.clamp(min=0).sum().item()
    neg = -row_sums.clamp(max=0).sum().item()
    return neg / pos if pos > 0 else None


def _check_judge(judge_scores: Any, doc_ids: Sequence[Sequence[Any]], config: CalibConfig) -> None:
    if judge_scores is None:
        raise ConfigError(
            f"calibration.score = {config.score!r} needs judge scores: pass judge_scores= "
            "(one list per rollout, one value in [0, 1] per intermediate step) to calibrate"
        )
    if len(judge_scores) != len(doc_ids):
        raise ValueError(f"judge_scores has {len(judge_scores)} entries for {len(doc_ids)} rollouts")
    for i, (js, docs) in enumerate(zip(judge_scores, doc_ids)):
        if js is None:
            continue
        if len(js) != len(docs) or any(not 0.0 <= float(c) <= 1.0 for c in js):
            raise ValueError(f"judge_scores[{i}] must hold {len(docs)} values in [0, 1], got {list(js)!r}")


def _clean_spans(i: int, spans: Sequence[Sequence[int]], n_inter: int, length: int) -> list[tuple[int, int]]:
    """Validated [start, end) pairs, clipped to the response length."""
    if len(spans) != n_inter and len(spans) != n_inter + 1:
        raise ValueError(
            f"rollout {i}: {len(spans)} turn spans for {n_inter} intermediate steps; "
            "expected one span per step plus at most one answer span"
        )
    out: list[tuple[int, int]] = []
    last = 0
    for start, end in spans:
        if start < last or end < start:
            raise ValueError(
                f"rollout {i}: turn span {[start, end]!r} is not an ordered, non-overlapping "
                "[start, end) pair"
            )
        last = end
        if end > length:
            start, end = min(start, length), length
        out.append((start, end))
    return out


def _rebalance_scales(
    adv: list[float],
    codes: list[int],
    num_groups: int,
    spans: list[list[tuple[int, int]]],
    doc_ids: Sequence[Sequence[Any]],
    response_mask: torch.Tensor,
    config: CalibConfig,
) -> dict[int, float]:
    """Scale of each positive answer step so that the group's positive answer mass is α·N."""
    if not config.rebalance:
        return {}
    answer = [(i, *s[-1]) for i, s in enumerate(spans) if len(s) == len(doc_ids[i]) + 1]
    if not answer:
        return {}
    if config.rebalance_sum == "token":
        weight = _span_mask_counts(answer, response_mask)
    else:
        weight = [1.0 if end > start else 0.0 for _, start, end in answer]
    pos = [0.0] * num_groups
    neg = [0.0] * num_groups
    for (i, _, _), w in zip(answer, weight):
        if adv[i] > 0:
            pos[codes[i]] += adv[i] * w
        elif adv[i] < 0:
            neg[codes[i]] -= adv[i] * w
    coeff = config.alpha if config.alpha_convention == "paper" else 1.0 / config.alpha
    return {
        i: coeff * neg[codes[i]] / pos[codes[i]]
        for i, _, _ in answer
        if adv[i] > 0 and pos[codes[i]] > 0 and neg[codes[i]] > 0
    }


def _span_mask_counts(spans: list[tuple[int, int, int]], response_mask: torch.Tensor) -> list[float]:
    """Loss tokens inside each (row, start, end) span, gathering only the span tokens."""
    import torch

    device = response_mask.device
    rows = torch.tensor([s[0] for s in spans], device=device)
    starts = torch.tensor([s[1] for s in spans], device=device)
    lens = torch.tensor([s[2] - s[1] for s in spans], device=device)
    total = int(sum(s[2] - s[1] for s in spans))
    which = torch.repeat_interleave(torch.arange(len(spans), device=device), lens, output_size=total)
    first = torch.cumsum(lens, 0) - lens
    flat_start = rows * response_mask.shape[1] + starts - first
    idx = flat_start.index_select(0, which).add_(torch.arange(total, device=device))
    picked = response_mask.reshape(-1).index_select(0, idx).to(torch.float64)
    counts = torch.zeros(len(spans), dtype=torch.float64, device=device).index_add_(0, which, picked)
    return counts.tolist()


def _c_hist(hist: Counter, n_scored: int) -> dict[str, float]:
    """Fraction of scored steps at each value a/k, with every a/k of each observed k present."""
    if not n_scored:
        return {}
    out: dict[str, float] = {}
    for k in sorted({k for _, k in hist if k}):
        for a in range(k + 1):
            out.setdefault(str(Fraction(a, k)), 0.0)
    for (a, k), n in hist.items():
        key = str(Fraction(a, k)) if k else "0"
        out[key] = out.get(key, 0.0) + n / n_scored
    return out
