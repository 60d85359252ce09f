"""The counterfactual update: one batch, one start point, each method's update, Δ log-prob.

From the start point (the SFT checkpoint every RL run starts from), one dedicated training batch
is sampled once (``questions`` × ``group_size`` rollouts, fixed seed). Each method then gets a
fresh :class:`~calibadv.train.local.LocalTrainer` on the same checkpoint (identical parameters,
a fresh AdamW — the start point's optimiser state — and the same RNG seeds) and runs the
trainer's own phases on a copy of that batch: score (the method's format rules) → recompute →
estimate (the method's advantages) → filter → update. Repeated ``max(updates)`` times on the
same batch; after each count in ``updates`` (1 and 4 by default) the policy is read:

- held-out (the evidence): teacher-forced on rollouts sampled once from the start point on
  ``dev_questions`` validation questions, each intermediate step's mean log-prob of its
  generated tokens, before and after (:mod:`calibadv.evaluate.counterfactual`);
- in-batch (a mechanism check): the same on the updated batch's own steps, which follows largely
  by construction (the method's advantage on exactly those tokens).

The update is the trainer's (``_estimate``, ``_filter``, ``_update``): no second optimiser step
exists to drift from the one the runs use. What does not depend on the method is computed
once: the start point's log-probs of both sets are every method's "before" and its first
update's old log-probs, and a read after update k gives update k + 1's old log-probs (what
``_recompute`` would compute again; it still runs for a critic or a reference model). The
updates themselves (forward and backward of every batch rollout, K times per method) are
~75% of the job's CPU time and cannot be shared (docs/training.md). Every trajectory is sampled
with the prompt of ``sample_method`` (PreThink, as CalibAdv's runs), so all methods see the
same tokens; each method scores them under its own format rules.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from calibadv.errors import ConfigError
from calibadv.evaluate.counterfactual import deltas, step_units, summarise, unit_logps
from calibadv.methods.catalog import check_shared_prompt
from calibadv.spec import RunSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CounterfactualConfig:
    """What the experiment samples and how often it updates (docs/training.md)."""

    questions: int = 64  # training questions in the one batch
    group_size: int = 8  # rollouts per question (G)
    mini_batches: int = 2  # AdamW steps per update (the runs' batch / mini-batch)
    dev_questions: int = 64  # held-out questions
    dev_samples: int = 2  # sampled rollouts per held-out question
    updates: tuple[int, ...] = (1, 4)  # read the policy after these many updates
    seed: int = 0
    reference: str = "search-r1"  # the paired differences are against this method (GRPO)
    sample_method: str = "calibadv"  # whose prompt samples the rollouts
    reps: int = 2000  # bootstrap draws
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, methods: Sequence[str]) -> None:
        for key in ("questions", "group_size", "mini_batches", "dev_questions", "dev_samples"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"counterfactual.{key} = {getattr(self, key)}: give a "
                                  "positive integer")
        if not self.updates or min(self.updates) < 1:
            raise ConfigError(f"counterfactual.updates = {list(self.updates)}: give update "
                              "counts >= 1, e.g. [1, 4]")
        for key in ("reference", "sample_method"):
            if getattr(self, key) not in methods:
                raise ConfigError(f"counterfactual.{key} = {getattr(self, key)!r} is not among "
                                  f"the methods given ({', '.join(methods)}): add its spec")


def method_spec(spec: RunSpec, start: str, train: str, dev: str,
                cfg: CounterfactualConfig) -> RunSpec:
    """``spec`` at the start point, on the dedicated batch: one step of all ``questions``."""
    t = spec.training
    return replace(
        spec, seed=cfg.seed,
        model=replace(spec.model, path=start),
        data=replace(spec.data, train=train, val=dev, val_size=cfg.dev_questions),
        training=replace(t, steps=1, batch_size=cfg.questions, group_size=cfg.group_size,
                         mini_batch_size=max(1, cfg.questions // cfg.mini_batches),
                         dump_rollouts_at=[]))


def _seed_all(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def policy_logps(trainer: Any, trajs: Sequence[Any], rows: Sequence[int] | None = None,
                 chunk: int = 16) -> dict[int, Any]:
    """Each row's response-slot log-probs (a 1-D tensor, ``len(response_ids)`` long; 0 at
    observation slots) under the trainer's current policy, teacher-forced without a graph.

    The rows go through the model sorted by length, ``chunk`` at a time, so a chunk pads
    little (under right padding and causal attention a row's values do not depend on its
    neighbours, up to float noise). Small chunks are cheaper per row on CPU at this model size:
    4.4, 5.0 and 5.5 CPU-s for 256 rows of ~365 tokens in chunks of 16, 32 and 64 (one
    thread). ``rows`` (default all) picks the rows needed."""
    import torch

    from calibadv.train.policy import response_logprobs

    order = sorted(range(len(trajs)) if rows is None else rows,
                   key=lambda r: len(trajs[r].prompt_ids) + len(trajs[r].response_ids))
    trainer.model.eval()
    out: dict[int, Any] = {}
    with torch.no_grad():
        for i in range(0, len(order), chunk):
            part = order[i:i + chunk]
            lp = response_logprobs(trainer.model, [trajs[r] for r in part], trainer.pad_id,
                                   trainer.t.temperature)[0]
            out.update((r, lp[n, :len(trajs[r].response_ids)]) for n, r in enumerate(part))
    return out


def as_lists(logps: Mapping[int, Any]) -> list[list[float]]:
    """:func:`policy_logps` of every row, in row order, as the lists ``unit_logps`` reads."""
    return [logps[r].cpu().tolist() for r in range(len(logps))]


def _fill_old(batch: Any, logps: Mapping[int, Any]) -> None:
    """The update's old log-probs from ``logps`` (the policy before this update), laid out as
    ``LocalTrainer._recompute`` lays them: one (rows, response width) tensor per micro-batch.
    A micro-batch with a row missing is left out: its loss forward gives them
    (``reuse_first_forward``), as in the trainer's own steps."""
    import torch

    for i, j in batch.chunks:
        if not all(r in logps for r in range(i, j)):
            continue
        width = max(1, max(len(batch.trajs[r].response_ids) for r in range(i, j)))
        old = torch.zeros((j - i, width), device=logps[i].device)
        for n, r in enumerate(range(i, j)):
            old[n, :len(logps[r])] = logps[r]
        batch.old_logp[i] = old


def _rows(trajs: Sequence[Any], owners: Sequence[Any]) -> list[dict[str, Any]]:
    return [{**tr.to_dict(), "question_id": q.id, "supporting_ids": q.supporting_ids}
            for tr, q in zip(trajs, owners, strict=True)]


def _sample(trainer: Any, cfg: CounterfactualConfig) -> tuple[Any, list[Any], list[Any]]:
    """The batch (the trainer's own rollout phase, step 1 of the dedicated data) and the
    held-out rollouts (``dev_samples`` sampled per validation question), both scored."""
    from calibadv.agent.rollouts import rollout, score

    _seed_all(cfg.seed)
    batch = trainer._rollout(1)
    dev_q = trainer.val_q[:cfg.dev_questions]
    trainer.model.eval()
    dev = rollout(dev_q, trainer.tok, trainer.agent_cfg, trainer.sampler, trainer.search_fn,
                  group_size=cfg.dev_samples)
    owners = [q for q in dev_q for _ in range(cfg.dev_samples)]
    for tr, q in zip(dev, owners, strict=True):
        score(tr, q, trainer.prethink, trainer.require_search)
    for tr, q in zip(batch.trajs, batch.owners, strict=True):
        score(tr, q, trainer.prethink, trainer.require_search)
    return batch, dev, owners


def _copy_batch(trainer: Any, sampled: Any) -> Any:
    """A fresh :class:`StepBatch` of the sampled rollouts (copied: scoring writes into them),
    with the method's mini- and micro-batch layout."""
    from calibadv.train.local_batch import StepBatch, micro_batches

    trajs = copy.deepcopy(sampled.trajs)
    mb = trainer.t.mini_batch_size * trainer.per_prompt
    return StepBatch(1, 0, trajs, list(sampled.owners), [dict(e) for e in sampled.extras], mb,
                     micro_batches(len(trajs), mb, max(1, trainer.t.micro_batch_size)))


def _updated(trainer: Any, sampled: Any, counts: Sequence[int], start: Mapping[int, Any],
             on_read: Any) -> dict[str, Any]:
    """The trainer's phases on a copy of ``sampled``, ``max(counts)`` updates; after each count
    in ``counts``, ``on_read(k, logps)`` with the batch's :func:`policy_logps` then. Returns the
    advantage summary of the batch.

    The old log-probs of update k are the policy after update k − 1 on the same rollouts: for
    k = 1 the start point's, ``start`` (the same for every method, computed once), and after a
    read the read's own. The trainer's ``_recompute`` computes exactly these (its entropies
    feed only the step log, not written here), so it runs only where something else than the
    policy's log-probs is needed: a critic's values or a reference model's log-probs."""
    batch = _copy_batch(trainer, sampled)
    trainer._score(batch)
    own = trainer.critic is None and trainer.ref_model is None
    logps = start
    skip = batch.mb_size if trainer.reuse_first_forward else 0  # the loss gives these rows'
    for k in range(1, max(counts) + 1):
        batch.old_logp.clear()
        batch.entropies.clear()
        batch.ref_logp.clear()
        if own:
            _fill_old(batch, logps)
        else:
            trainer._recompute(batch)
        if k == 1:
            trainer._estimate(batch)
            trainer._filter(batch)
        trainer._update(batch)
        if k in counts:
            logps = policy_logps(trainer, batch.trajs)
            on_read(k, logps)
        elif own:
            logps = policy_logps(trainer, batch.trajs, range(skip, batch.size))
    m = batch.loss_mask.bool()
    neg = [float(batch.advantages[i][m[i]].mean()) for i in range(batch.size)
           if m[i].any() and float(batch.advantages[i][m[i]].mean()) < 0]
    return {"reward_mean": float(np.mean([t.reward for t in batch.trajs])),
            "negative_rollouts": len(neg),
            "negative_advantage_mean": float(np.mean(neg)) if neg else None}


def run(specs: Mapping[str, RunSpec], start: str, train: str, dev: str, out: Path,
        cfg: CounterfactualConfig) -> dict[str, Any]:
    """The experiment; writes ``out/summary.json`` and ``out/steps.jsonl`` and returns the
    summary (rows per update count, split and (method, class); timings)."""
    from calibadv.retrieval.client import make_search_fn
    from calibadv.retrieval.launch import retrieval_url

    cfg.check(list(specs))
    check_shared_prompt({m: s.method for m, s in specs.items()}, cfg.sample_method)
    specs = {m: method_spec(s, start, train, dev, cfg) for m, s in specs.items()}
    first = specs[cfg.sample_method]
    with retrieval_url(first.retrieval) as url:
        search_fn = make_search_fn(url, first.retrieval.topk)
        return _run(specs, search_fn, out, cfg)


def _trainer(name: str, spec: RunSpec, out: Path, search_fn: Any) -> Any:
    """A fresh trainer on the start point (a scratch directory: nothing to resume from)."""
    from calibadv.train.local import LocalTrainer

    work = out / "work" / name
    if work.exists() and any(work.iterdir()):
        raise ConfigError(f"{work} is not empty: remove it (the counterfactual's scratch "
                          "directory must hold no checkpoint to resume from)")
    work.mkdir(parents=True, exist_ok=True)
    _seed_all(spec.seed)
    return LocalTrainer(spec, work, search_fn)


def _run(specs: Mapping[str, RunSpec], search_fn: Any, out: Path,
         cfg: CounterfactualConfig) -> dict[str, Any]:
    from calibadv.io import atomic_write_json, atomic_write_jsonl

    times: dict[str, float] = {}
    t0 = time.time()
    base = _trainer("sample", specs[cfg.sample_method], out, search_fn)
    batch, dev, dev_owners = _sample(base, cfg)
    sets = {"held-out": _rows(dev, dev_owners), "in-batch": _rows(batch.trajs, batch.owners)}
    trajs = {"held-out": dev, "in-batch": batch.trajs}
    units = {k: step_units(v) for k, v in sets.items()}
    # the start point's log-probs: every method's "before" and its first update's old ones
    start = {k: policy_logps(base, trajs[k]) for k in sets}
    before = {k: unit_logps(units[k], sets[k], as_lists(start[k])) for k in sets}
    times["sample_s"] = time.time() - t0
    after: dict[tuple[int, str, str], list[float | None]] = {}
    adv: dict[str, Any] = {}
    for method, spec in specs.items():
        t1 = time.time()
        tr = _trainer(method, spec, out, search_fn)
        own_start = (start["in-batch"] if tr.t.temperature == base.t.temperature
                     else policy_logps(tr, batch.trajs))  # the same parameters, another T

        def read(k: int, logps: Mapping[int, Any], tr: Any = tr, method: str = method) -> None:
            got = {"in-batch": logps, "held-out": policy_logps(tr, dev)}
            for split in sets:
                lp = unit_logps(units[split], sets[split], as_lists(got[split]))
                after[(k, split, method)] = deltas(before[split], lp)

        adv[method] = _updated(tr, batch, cfg.updates, own_start, read)
        times[f"{method}_s"] = time.time() - t1
    del base
    t2 = time.time()
    summary = _summary(cfg, specs, units, sets, after, adv, times, time.time() - t0)
    times["summary_s"] = time.time() - t2
    atomic_write_jsonl(out / "steps.jsonl", _step_rows(units, after))
    atomic_write_json(out / "summary.json", summary)
    return summary


def _summary(cfg: CounterfactualConfig, specs: Mapping[str, RunSpec], units: Any, sets: Any,
             after: Any, adv: Any, times: dict[str, float], wall: float) -> dict[str, Any]:
    rows = []
    for k in cfg.updates:
        for split in sets:
            per_method = {m: after[(k, split, m)] for m in specs}
            for r in summarise(units[split], per_method, cfg.reference, cfg.reps, cfg.seed):
                rows.append({"updates": k, "split": split, **r.to_dict()})
    counts = {split: {"rollouts": len(sets[split]), "steps": len(units[split]),
                      "questions": len({u.group for u in units[split]}),
                      "right_rollouts": sum(1 for r in sets[split] if float(r["em"]) >= 1),
                      "gold_steps": sum(1 for u in units[split] if u.gold)}
              for split in sets}
    return {"config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in cfg.__dict__.items() if k != "extra"},
            "methods": list(specs), "counts": counts, "advantages": adv, "rows": rows,
            "times": times, "wall_s": wall}


def _step_rows(units: Any, after: Any) -> list[dict[str, Any]]:
    """One line per (split, step): its class and every (method, updates) Δ."""
    out = []
    for split, us in units.items():
        for i, u in enumerate(us):
            row = {"split": split, "question": u.group, "row": u.row, "turn": u.turn,
                   "gold": u.gold, "right": u.right}
            for (k, s, m), ds in after.items():
                if s == split:
                    row[f"{m}@{k}"] = ds[i]
            out.append(row)
    return out
