"""Proxy validation (paper Table 5): do steps the silver proxy scores c = 1 look helpful?

The stage samples N steps with c = 1 per dumped checkpoint (:func:`sample_cases`), asks the
judge about each, merges human labels when a filled sheet is given, and summarises per
checkpoint: the share the judge (and humans) call helpful, and — on the synthetic world,
where the gold passages are known — the share that really retrieved a gold passage / advanced
a hop, and how often the judge and the proxy agree with that gold truth.

A verdict counts as "helpful" when it is >= ``helpful_min`` (1.0 by default: only an outright
"helpful"; 0.5 would also count "partially helpful").

Beside each share the block keeps its counts (``counts[key] = [k, n]``, for Wilson intervals)
and, to tell skill from base rate, Cohen's kappa of the judge against gold and against humans,
and the agreement of the best constant verdict with gold (:mod:`calibadv.judge.agreement`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from calibadv.judge.agreement import cohen_kappa
from calibadv.judge.client import Verdict
from calibadv.judge.steps import Case


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _block(cases: Sequence[Case], verdicts: Mapping[str, Verdict],
           human: Mapping[str, float], helpful_min: float, min_c: float) -> dict[str, Any]:
    judged = [(c, verdicts[c.case_id]) for c in cases
              if c.case_id in verdicts and verdicts[c.case_id].status == "ok"]
    llm_helpful = [v.verdict >= helpful_min for _, v in judged]
    labelled = [human[c.case_id] >= helpful_min for c in cases if c.case_id in human]
    gold = [c for c in cases if c.gold is not None]
    statuses = Counter(verdicts[c.case_id].status for c in cases if c.case_id in verdicts)
    dist = Counter(f"{v.verdict:g}" for _, v in judged)
    out: dict[str, Any] = {
        "n": len(cases),
        "llm_judged": len(judged),
        "llm_unparsable": statuses.get("unparsable", 0),
        "llm_failed": statuses.get("failed", 0),
        "llm_unparsable_frac": _ratio(statuses.get("unparsable", 0), sum(statuses.values())),
        "llm_verdicts": {k: dist[k] for k in ("1", "0.5", "0") if dist[k]},
        "llm_helpful": _ratio(sum(llm_helpful), len(llm_helpful)),
        "human_labelled": len(labelled),
        "human_helpful": _ratio(sum(labelled), len(labelled)),
        "has_gold": bool(gold),
    }
    if gold:
        scored = [c for c in gold if c.c is not None]
        both = [(c, verdicts[c.case_id]) for c in gold
                if c.case_id in verdicts and verdicts[c.case_id].status == "ok"]
        out.update({
            "gold_hit": _ratio(sum(c.gold["hit"] for c in gold), len(gold)),
            "gold_advanced": _ratio(sum(c.gold["advanced"] for c in gold), len(gold)),
            # the proxy calls a step helpful when c >= min_c (every step of the paper's c = 1
            # sample, so there it agrees exactly where the step advanced a hop)
            "proxy_scored": len(scored),
            "proxy_agree_advanced": _ratio(
                sum((c.c >= min_c - 1e-9) == c.gold["advanced"] for c in scored), len(scored)),
            "llm_agree_hit": _ratio(
                sum((v.verdict >= helpful_min) == c.gold["hit"] for c, v in both), len(both)),
            "llm_agree_advanced": _ratio(
                sum((v.verdict >= helpful_min) == c.gold["advanced"] for c, v in both), len(both)),
        })
        hum = [c for c in gold if c.case_id in human]
        out["human_agree_advanced"] = _ratio(
            sum((human[c.case_id] >= helpful_min) == c.gold["advanced"] for c in hum), len(hum))
    out.update(_skill(cases, judged, human, helpful_min, min_c, statuses))
    return out


def _skill(cases: Sequence[Case], judged: Sequence[tuple[Case, Verdict]],
           human: Mapping[str, float], helpful_min: float, min_c: float,
           statuses: Counter) -> dict[str, Any]:
    """Counts behind every share, Cohen's kappa, and the constant-verdict baseline."""
    llm = {c.case_id: v.verdict >= helpful_min for c, v in judged}
    hum = {c.case_id: human[c.case_id] >= helpful_min for c in cases if c.case_id in human}
    gold = {c.case_id: bool(c.gold["advanced"]) for c in cases if c.gold is not None}
    hit = {c.case_id: bool(c.gold["hit"]) for c in cases if c.gold is not None}
    proxy = {c.case_id: c.c >= min_c - 1e-9 for c in cases if c.gold is not None and c.c is not None}

    def agree(a: Mapping[str, bool], b: Mapping[str, bool]) -> list[int]:
        both = [k for k in a if k in b]
        return [sum(a[k] == b[k] for k in both), len(both)]

    counts: dict[str, list[int]] = {
        "llm_helpful": [sum(llm.values()), len(llm)],
        "human_helpful": [sum(hum.values()), len(hum)],
        "llm_unparsable_frac": [statuses.get("unparsable", 0), sum(statuses.values())],
    }
    out: dict[str, Any] = {"counts": counts}
    if gold:
        n_adv = sum(gold.values())
        helpful = n_adv >= len(gold) - n_adv  # the constant verdict that agrees most with gold
        counts.update(
            gold_hit=[sum(hit.values()), len(hit)],
            gold_advanced=[n_adv, len(gold)],
            proxy_agree_advanced=agree(proxy, gold),
            llm_agree_advanced=agree(llm, gold),
            llm_agree_hit=agree(llm, hit),
            human_agree_advanced=agree(hum, gold),
            const_agree_advanced=[max(n_adv, len(gold) - n_adv), len(gold)],
        )
        out.update(
            const_verdict="helpful" if helpful else "not helpful",
            const_agree_advanced=_ratio(*counts["const_agree_advanced"]),
            llm_kappa_advanced=cohen_kappa([(llm[k], gold[k]) for k in llm if k in gold]),
            human_kappa_advanced=cohen_kappa([(hum[k], gold[k]) for k in hum if k in gold]),
        )
    out["llm_kappa_human"] = cohen_kappa([(llm[k], hum[k]) for k in llm if k in hum])
    return out


def summarise(cases: Sequence[Case], verdicts: Mapping[str, Verdict],
              human: Mapping[str, float] | None = None, helpful_min: float = 1.0,
              min_c: float = 1.0) -> dict[str, Any]:
    """Per-checkpoint and overall numbers of one run's validation sample."""
    human = human or {}
    by_step: dict[int, list[Case]] = defaultdict(list)
    for case in cases:
        by_step[case.step].append(case)
    return {
        "helpful_min": helpful_min,
        "steps": sorted(by_step),
        "per_step": {str(s): _block(cs, verdicts, human, helpful_min, min_c)
                     for s, cs in sorted(by_step.items())},
        "overall": _block(cases, verdicts, human, helpful_min, min_c),
    }


def verdict_rows(cases: Sequence[Case], verdicts: Mapping[str, Verdict],
                 human: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One JSONL row per case: the case, the judge's verdict (and answers), the human label."""
    human = human or {}
    rows = []
    for case in cases:
        v = verdicts.get(case.case_id)
        rows.append({
            **case.to_dict(),
            "verdict": v.verdict if v else None,
            "status": v.status if v else "not_judged",
            "answers": v.answers if v else [],
            "error": v.error if v else None,
            "cached": v.cached if v else False,
            "human": human.get(case.case_id),
        })
    return rows
