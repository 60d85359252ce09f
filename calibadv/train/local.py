"""The local training backend: single-process GRPO with CalibAdv calibration on HF models.

One step is a fixed pipeline of the method's registered parts (docs/design.md, "Methods as
compositions"), run as named phases in the order verl's trainer runs them
(:mod:`calibadv.train.verl.trainer`, :mod:`calibadv.train.verl.estimator`), so the two backends
read alike; the phases hand each other a :class:`~calibadv.train.local_batch.StepBatch`:

1. rollout: ``batch_size`` questions × the preset's rollout shape
   (``calibadv.methods.rollout_shapes``: ``group_size`` independent rollouts by default, or
   trees; HF generation, sampling);
2. score: gated-F1 reward (and, with ``score: judge``, the judge's step scores);
3. recompute: no-grad old and reference log-probs and, for PPO, the value head's values;
4. estimate: the preset's rollout filter (``calibadv.methods.filters``) decides which rollouts
   enter the statistics, the preset's estimator (``calibadv.methods.estimators``;
   ``calibadv.methods.advantage.calibrate`` by default) runs on those;
5. filter: the rollouts the filter keeps from training leave the loss mask;
6. update: the value head's update (PPO), then ``batch_size / mini_batch_size`` AdamW updates
   with the preset's verl-registered policy loss (clip ratio, optional entropy bonus and KL to
   the initial policy);
7. log: the step's metrics line and, at the configured steps, the rollout dump.

The files it writes are those of docs/design.md ("Files a training run writes"); see
docs/training.md for the loop, resume and selection.

Resume: the data order is a pure function of (seed, epoch), the optimiser and RNG states are
in each checkpoint, and log lines after the resumed step are dropped, so a run killed at any
point and restarted gives the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from calibadv.errors import ConfigError
from calibadv.io import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl
from calibadv.spec import RunSpec, dump_run_spec
from calibadv.train.local_batch import StepBatch, UpdateStats, micro_batches
from calibadv.train.local_batch import mean as _mean

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# pure helpers
def steps_per_epoch(num_questions: int, batch_size: int) -> int:
    n = num_questions // batch_size
    if n == 0:
        raise ConfigError(
            f"training.batch_size ({batch_size}) is larger than the training set "
            f"({num_questions} questions): lower it"
        )
    return n


def total_steps(spec: RunSpec, num_questions: int) -> int:
    t = spec.training
    return t.steps if t.steps is not None else t.epochs * steps_per_epoch(num_questions, t.batch_size)


def batch_indices(seed: int, step: int, num_questions: int, batch_size: int) -> tuple[int, list[int]]:
    """(epoch, question indices) of 1-based ``step``: a fresh permutation per epoch, tail dropped."""
    spe = steps_per_epoch(num_questions, batch_size)
    epoch, k = divmod(step - 1, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(num_questions)
    return epoch, perm[k * batch_size : (k + 1) * batch_size].tolist()


def _truncate_log(path: Path, max_step: int) -> None:
    """Drop lines logged after ``max_step`` (written before a kill, redone after resume)."""
    if path.exists():
        atomic_write_jsonl(path, [r for r in read_jsonl(path) if r["step"] <= max_step])


def _progress(total: int, desc: str):
    from calibadv.progress import progress

    return progress(total=total, desc=desc, leave=False)


def _calib_config(method: dict[str, Any]):
    from calibadv.methods.advantage import CalibConfig

    return CalibConfig.from_dict(method.get("calibration"), where="method.calibration")


# ---------------------------------------------------------------------------------------
def _has_dropout(model: Any) -> bool:
    """Whether train mode changes the model's forward (a dropout module or attention dropout)."""
    import torch

    if float(getattr(model.config, "attention_dropout", 0.0) or 0.0) > 0:
        return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


class LocalTrainer:
    """State of one local run; :meth:`train` runs it to the end (resuming if possible).

    :meth:`step` runs the phases of one RL step in verl's order (module docstring), each a
    method of its own that reads and fills a :class:`~calibadv.train.local_batch.StepBatch`.
    """

    def __init__(self, spec: RunSpec, out_dir: Path, search_fn: Any) -> None:
        import torch

        self.spec, self.out = spec, out_dir
        self.t = spec.training
        self.search_fn = search_fn
        self._read_method(spec)
        self._read_data(spec)
        # seeded before the model loads: a resume then overwrites the states from its checkpoint
        torch.manual_seed(spec.seed)
        random.seed(spec.seed)
        np.random.seed(spec.seed)
        self.start_step = 0
        from calibadv.train import checkpoint as ckpt

        resume = ckpt.latest(out_dir)
        self._load_models(spec, resume)
        if resume:
            self._restore(resume)
        engine = spec.agent.generator  # kv (default) or hf: calibadv.agent.engines
        from calibadv.agent.engines import local_generator

        self.sampler = local_generator(engine, self.model, self.tok,
                                       temperature=self.t.temperature, top_p=self.t.top_p)
        self.greedy = local_generator(engine, self.model, self.tok, greedy=True)

    def _read_method(self, spec: RunSpec) -> None:
        """The method's registered parts and the flags the phases branch on, read once."""
        from calibadv.agent.rollouts import agent_config, method_flags
        from calibadv.methods.catalog import method_needs, method_part
        from calibadv.train.policy import actor_config

        self.prethink, self.require_search = method_flags(spec.method)
        self.agent_cfg = agent_config(spec, self.prethink)
        self.calib_cfg = _calib_config(spec.method)
        self.actor_cfg = actor_config(self.t.clip_ratio, spec.method.get("loss") or {})
        self.filter = method_part(spec.method, "filter")
        self.estimator = method_part(spec.method, "estimator")
        self.shape = method_part(spec.method, "rollout")
        self.reward_part = method_part(spec.method, "reward")
        self.needs = method_needs(spec.method)  # "values": PPO with a value head (gae)
        loss_knobs = (spec.method.get("loss") or {}).get("knobs") or {}
        self.needs_answer_mask = bool(loss_knobs.get("mask_answer"))  # LLDS-MA

    def _read_data(self, spec: RunSpec) -> None:
        """The question sets and the step count they give (a config error before a model loads)."""
        from calibadv.data.questions import load_questions
        from calibadv.methods.rollout_shapes import rollouts_per_prompt

        self.train_q = load_questions(spec.data.train)
        self.val_q = load_questions(spec.data.val, spec.data.val_size) if spec.data.val else []
        self.steps = total_steps(spec, len(self.train_q))
        self.spe = steps_per_epoch(len(self.train_q), self.t.batch_size)
        self.per_prompt = rollouts_per_prompt(*self.shape, self.t.group_size)

    def _load_models(self, spec: RunSpec, resume: Path | None) -> None:
        """The policy (from the latest checkpoint when resuming) and its optimiser, the value
        head when the estimator needs values, and the frozen reference policy when a KL term
        (in the loss or in the reward) needs one."""
        import torch

        from calibadv.models.policy import load_policy

        path = str(resume) if resume else spec.model.path
        self.model, self.tok = load_policy(path, spec.model.dtype)
        if spec.model.chat_template:
            self.tok.chat_template = spec.model.chat_template
        self.pad_id = self.tok.pad_token_id
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.t.lr, weight_decay=self.t.weight_decay
        )
        # the first mini-batch's loss forward gives its old log-probs (_recompute): only when a
        # train-mode forward is the eval-mode one, i.e. the model has no active dropout
        self.reuse_first_forward = not _has_dropout(self.model)
        self.ref_model = None
        self.critic = None
        reward_kl = float(self.estimator[1].get("kl_coef", 0.0)) if "values" in self.needs else 0.0
        if "values" in self.needs:
            from calibadv.train.value import Critic

            self.critic = Critic(self.model.config.hidden_size, self.estimator[1]["critic_lr"],
                                 self.estimator[1]["cliprange_value"], self.t.grad_clip,
                                 next(self.model.parameters()).device)
        if self.t.kl_coef > 0 or reward_kl > 0:
            self.ref_model, _ = load_policy(spec.model.path, spec.model.dtype)
            self.ref_model.eval().requires_grad_(False)

    def _restore(self, resume: Path) -> None:
        """Optimiser, RNG and value-head states of checkpoint ``resume``: the steps after it are
        then those of an uninterrupted run."""
        from calibadv.train import checkpoint as ckpt

        state = ckpt.load_trainer_state(resume)
        self.optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        if self.critic is not None:
            if "critic" not in state:
                raise ConfigError(
                    f"{resume}: this checkpoint holds no value head (it was written by a run "
                    "without a value model), but the method's estimator needs one; train "
                    "into a fresh --out directory")
            self.critic.load_state_dict(state["critic"])
        self.start_step = int(state["step"])
        log.info("resuming from %s (step %d)", resume, self.start_step)

    # -- one RL step ---------------------------------------------------------------------
    def step(self, step: int) -> dict[str, Any]:
        """One RL step, its phases in verl's order (``calibadv.train.verl``): generate, reward,
        old/ref log-probs and values, advantage (the filter's decision inside it, as in
        ``compute_calibadv_advantage``), critic then actor update, metrics. Returns the step's
        line of metrics.jsonl."""
        t0 = time.time()
        batch = self._rollout(step)
        self._score(batch)
        self._recompute(batch)
        self._estimate(batch)
        self._filter(batch)
        update = self._update(batch)
        return self._log(batch, update, t0)

    def _rollout(self, step: int) -> StepBatch:
        """The step's questions (a pure function of seed and step, so a resume redoes them)
        grown into rollouts by the preset's rollout shape, with the micro-batch layout."""
        from calibadv.agent.rollouts import prompt_token_ids
        from calibadv.methods.rollout_shapes import grow

        epoch, idx = batch_indices(self.spec.seed, step, len(self.train_q), self.t.batch_size)
        questions = [self.train_q[i] for i in idx]
        self.model.eval()
        prompts = [prompt_token_ids(self.tok, q, self.agent_cfg.prethink) for q in questions]
        rng = random.Random(f"{self.spec.seed}/{step}")  # tree node draws: same after a resume
        with _progress(len(questions) * self.per_prompt, f"step {step} rollouts") as bar:
            grown = grow(*self.shape, prompts, self.tok, self.agent_cfg, self.sampler,
                         self.search_fn, self.t.group_size, rng, progress=bar)
        trajs = grown.trajectories
        # mini-batches of whole questions, each one optimiser step, cut into micro-batches
        mb_size = self.t.mini_batch_size * self.per_prompt
        return StepBatch(step, epoch, trajs, [questions[o] for o in grown.owner], grown.extra,
                         mb_size, micro_batches(len(trajs), mb_size,
                                                max(1, self.t.micro_batch_size)))

    def _score(self, batch: StepBatch) -> None:
        """Each rollout's reward (gated F1 under the method's format rules), the response mask
        the estimator sees (before the filter's), the group ids and, under ``score: judge``,
        the judge's step scores (verl asks the judge inside its estimator; same inputs)."""
        from calibadv.agent.rollouts import score
        from calibadv.train.policy import pad_batch

        for traj, q in zip(batch.trajs, batch.owners, strict=True):
            score(traj, q, self.prethink, self.require_search)
        _, _, batch.resp_mask, _ = pad_batch(batch.trajs, self.pad_id)
        batch.groups = [q.index for q in batch.owners]
        batch.judge_scores, batch.judge_metrics = self._judge_scores(batch)

    def _recompute(self, batch: StepBatch) -> None:
        """The no-grad forwards before any update (verl: old log-probs, reference log-probs,
        values), on exactly the micro-batches the loss uses.

        The first mini-batch's old log-probs are the policy's before any update: exactly what
        its own loss forward computes, so that forward gives them (detached; ratio 1, as verl's
        separate recomputation gives up to float noise) and its rows skip this pass: ~7% of a
        tiny-model step at mini-batch 4 of 8 (docs/training.md). A critic needs every row's
        hidden states first, so then every row takes the pass."""
        import torch

        from calibadv.train.policy import response_logprobs

        first_from_loss = self.critic is None and self.reuse_first_forward
        hidden = []
        with torch.no_grad():
            for i, j in batch.chunks:
                chunk = batch.trajs[i:j]
                if not (first_from_loss and i < batch.mb_size):
                    lp, ent, _ = response_logprobs(self.model, chunk, self.pad_id,
                                                   self.t.temperature, with_entropy=True)
                    batch.old_logp[i] = lp
                    batch.entropies[i] = ent
                if self.ref_model is not None:
                    batch.ref_logp[i] = response_logprobs(self.ref_model, chunk, self.pad_id,
                                                          self.t.temperature)[0]
                if self.critic is not None:
                    from calibadv.train.value import hidden_states

                    hidden.append(hidden_states(self.model, chunk, self.pad_id))
        if self.critic is not None:
            self._values(batch, hidden)

    def _values(self, batch: StepBatch, hidden: list[Any]) -> None:
        """PPO: the value head's values and the (B, L) old and reference log-probs the gae
        estimator reads (its KL penalty in the reward)."""
        import torch

        width = batch.resp_mask.shape[1]
        batch.hidden = _pad_hidden(hidden, width)
        batch.ppo["values"] = self.critic.values(batch.hidden).cpu()
        batch.ppo["old_logp"] = torch.cat(_pad_list([batch.old_logp[i].cpu()
                                                     for i, _ in batch.chunks], width))
        if batch.ref_logp:
            batch.ppo["ref_logp"] = torch.cat(_pad_list([batch.ref_logp[i].cpu()
                                                         for i, _ in batch.chunks], width))

    def _estimate(self, batch: StepBatch) -> None:
        """The advantages: the preset's filter decides which rollouts enter the group
        statistics, the estimator runs on those alone and the rest get 0 (as verl's
        ``compute_calibadv_advantage``)."""
        from calibadv.methods.filters import decide, filtered_advantage

        batch.decision = decide(*self.filter, batch.trajs, batch.step)
        batch.advantages, batch.stats = filtered_advantage(
            batch.decision, lambda rows: self._run_estimator(batch, rows), batch.size,
            batch.resp_mask.shape[1])

    def _run_estimator(self, batch: StepBatch, rows: list[int]) -> tuple[Any, dict[str, Any]]:
        """The preset's estimator on rollouts ``rows`` (their rewards, unfiltered response
        masks, groups, what each rollout carries and, for PPO, values and log-probs)."""
        import torch

        from calibadv.methods.estimators import EstimatorBatch, estimate

        batch.est_rows = rows  # the critic trains on these rows' returns
        trajs, owners, judge = batch.trajs, batch.owners, batch.judge_scores
        return estimate(*self.estimator, EstimatorBatch(
            torch.tensor([trajs[i].reward for i in rows], dtype=torch.float32),
            batch.resp_mask[rows],
            [batch.groups[i] for i in rows],
            [{**trajs[i].to_dict(), "golden_answers": owners[i].golden_answers,
              "judge_scores": judge[i] if judge is not None else None,
              **owners[i].stepsearch_fields(), **batch.extras[i]} for i in rows],
            self.calib_cfg,
            **{k: v[rows] for k, v in batch.ppo.items()},
            reward=self.reward_part,
        ))

    def _filter(self, batch: StepBatch) -> None:
        """Rollouts the filter keeps from training leave the loss mask (and so the token-mean
        denominator; verl's actor keeps its own mask, docs/baselines.md). Their advantages are
        already 0 (``filtered_advantage``)."""
        import torch

        batch.trains = torch.tensor(batch.decision.trains, dtype=torch.float32)
        batch.loss_mask = batch.resp_mask * batch.trains[:, None]

    def _update(self, batch: StepBatch) -> UpdateStats:
        """verl's order: the critic's update before the actor's."""
        stats = UpdateStats()
        if self.critic is not None:
            stats.critic_metrics = self._update_critic(batch)
        self._update_actor(batch, stats)
        return stats

    def _update_critic(self, batch: StepBatch) -> dict[str, float]:
        """The value head's update on the estimator's returns (rows it did not see: mask 0)."""
        import torch

        rows = batch.est_rows
        B, width = batch.loss_mask.shape
        returns, old_values = torch.zeros(B, width), torch.zeros(B, width)
        mask = torch.zeros(B, width)
        if rows:
            returns[rows] = batch.stats["returns"].cpu()
            old_values[rows] = batch.stats["values"].cpu()
            mask[rows] = batch.loss_mask[rows]
        dev = batch.hidden.device
        return self.critic.update(batch.hidden, returns.to(dev), old_values.to(dev), mask.to(dev),
                                  batch.mini_batches())

    def _update_actor(self, batch: StepBatch, stats: UpdateStats) -> None:
        """One AdamW step per mini-batch: its micro-batches' gradients add up, each loss scaled
        by the mini-batch's token count, then the gradient is clipped."""
        import torch

        micro = max(1, self.t.micro_batch_size)
        self.model.train()
        for mb in batch.mini_batches():
            n_tok = int(batch.loss_mask[mb.start : mb.stop].sum().item())
            self.optimizer.zero_grad(set_to_none=True)
            mb_loss = 0.0
            for i in range(mb.start, mb.stop, micro):
                mb_loss += self._actor_micro_batch(batch, i, min(mb.stop, i + micro), mb, n_tok,
                                                   stats)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
            self.optimizer.step()
            stats.losses.append(mb_loss)
            stats.grad_norms.append(float(grad_norm))
        self.model.eval()

    def _actor_micro_batch(self, batch: StepBatch, i: int, j: int, mb: range, n_tok: int,
                           stats: UpdateStats) -> float:
        """Forward and backward of the preset's policy loss on rows ``i:j``; its loss value."""
        from calibadv.methods.losses import answer_mask_context
        from calibadv.train.policy import answer_token_mask, policy_loss, response_logprobs

        chunk = batch.trajs[i:j]
        fresh = i not in batch.old_logp  # the first mini-batch (_recompute's first_from_loss)
        lp, ent, mask = response_logprobs(self.model, chunk, self.pad_id, self.t.temperature,
                                          with_entropy=self.t.entropy_coef > 0 or fresh,
                                          entropy_grad=self.t.entropy_coef > 0)
        if fresh:
            batch.old_logp[i] = lp.detach()
            batch.entropies[i] = ent.detach()
        width = mask.shape[1]
        mask = mask * batch.trains[i:j, None].to(mask.device)
        answers = answer_token_mask(chunk, self.tok, width) if self.needs_answer_mask else None
        with answer_mask_context(answers):
            loss, m = policy_loss(
                self.actor_cfg,
                batch.old_logp[i][:, :width].to(lp.device),
                lp,
                batch.advantages[i:j, :width].to(lp.device),
                mask,
                batch_num_tokens=max(n_tok, 1),
                global_batch_size=len(mb),
                entropy=ent,
                entropy_coef=self.t.entropy_coef,
                ref_logp=batch.ref_logp[i][:, :width] if batch.ref_logp else None,
                kl_coef=self.t.kl_coef,
            )
        loss.backward()
        value = float(loss.detach())
        stats.clipfracs.append(m["pg_clipfrac"])
        for key, v in m.items():  # the registered loss' own signals
            if key not in ("pg_loss", "pg_clipfrac", "kl_loss"):
                stats.term_metrics.setdefault(key, []).append(v)
        return value

    def _log(self, batch: StepBatch, update: UpdateStats, t0: float) -> dict[str, Any]:
        """The step's metrics.jsonl line (rollout, update, estimator and judge signals, in that
        order) and, at ``dump_rollouts_at``, its rollout dump."""
        metrics: dict[str, Any] = {
            "step": batch.step,
            "epoch": batch.epoch,
            **self._rollout_metrics(batch),
            **update.metrics(self.optimizer.param_groups[0]["lr"]),
        }
        for key, value in batch.stats.items():
            if key not in ("per_step_c", "silver_sets", "rollout_advantage", "returns", "values"):
                metrics[key] = _jsonable(value)
        metrics.update(batch.judge_metrics)
        metrics["time_s"] = time.time() - t0
        if batch.step in self.t.dump_rollouts_at:
            self.dump(batch)
        return metrics

    def _rollout_metrics(self, batch: StepBatch) -> dict[str, float]:
        """What the rollouts looked like: reward, format, entropy and confidence of the
        generated tokens (entropy over the tokens that trained), lengths and searches."""
        import torch

        from calibadv.evaluate.metrics import HIGH_PPL_THRESHOLD, rollout_ppl

        trajs = batch.trajs
        gen_mask = batch.loss_mask.bool()
        ent_all = torch.cat([e.flatten() for e in _pad_list(
            [batch.entropies[i] for i, _ in batch.chunks], batch.loss_mask.shape[1])])
        gen_lp = [lp for tr in trajs for lp, m in zip(tr.logprobs, tr.loss_mask) if m]
        ppls = [rollout_ppl(tr) for tr in trajs]
        return {
            "reward_mean": _mean([tr.reward for tr in trajs]),
            "f1_mean": _mean([tr.f1 for tr in trajs]),
            "em_mean": _mean([tr.em for tr in trajs]),
            "format_rate": _mean([float(tr.format_ok) for tr in trajs]),
            "rollouts": len(trajs),  # the shares' denominator (the report's Wilson intervals)
            "entropy": float(ent_all[gen_mask.flatten()].mean()) if gen_mask.any() else 0.0,
            "token_prob_mean": _mean([math.exp(x) for x in gen_lp]),
            "ppl_mean": _mean(ppls),
            "high_ppl_ratio": _mean([float(p >= HIGH_PPL_THRESHOLD) for p in ppls]),
            "valid_searches_mean": _mean([float(tr.num_searches) for tr in trajs]),
            "response_len_mean": _mean([float(len(tr.response_ids)) for tr in trajs]),
        }

    def _judge_scores(self, batch: StepBatch) -> tuple[Any, dict[str, Any]]:
        """``score: judge``: the judge's c for the steps of negative rollouts (calibadv.judge)."""
        judge = getattr(self, "step_judge", None)
        if judge is None:
            return None, {}
        import torch

        trajs = batch.trajs
        rows = [{"question": q.question, "golden_answers": q.golden_answers,
                 "queries": tr.queries, "thinks": tr.thinks, "doc_ids": tr.doc_ids,
                 "turn_spans": tr.turn_spans, "response_text": tr.response_text}
                for tr, q in zip(trajs, batch.owners, strict=True)]
        return judge.score(rows, torch.tensor([tr.reward for tr in trajs], dtype=torch.float32),
                           torch.tensor([tr.format_ok for tr in trajs], dtype=torch.bool),
                           batch.resp_mask, batch.groups, self.calib_cfg)

    def dump(self, batch: StepBatch) -> None:
        """rollouts/step_NNNNNN.jsonl: each rollout with its question, reward, advantage (the
        estimator's per-rollout one where it has it, else the mean over trained tokens) and c."""
        stats = batch.stats
        per_step_c = stats.get("per_step_c") or [None] * batch.size
        silver = stats.get("silver_sets") or {}
        rollout_adv = stats.get("rollout_advantage")
        rows = []
        for i, (tr, q) in enumerate(zip(batch.trajs, batch.owners, strict=True)):
            m = batch.loss_mask[i].bool()
            adv = float(batch.advantages[i][m].mean()) if m.any() else 0.0
            row = tr.to_dict()
            row.update(step=batch.step, group=q.index, question_id=q.id, question=q.question,
                       golden_answers=q.golden_answers, supporting_ids=q.supporting_ids,
                       advantage=float(rollout_adv[i]) if rollout_adv else adv,
                       advantage_mean=adv, c=_jsonable(per_step_c[i]),
                       silver_ids=_jsonable(silver.get(q.index, silver.get(str(q.index), []))))
            row.update(batch.extras[i])  # what the rollout shape adds (tree ids)
            rows.append(row)
        atomic_write_jsonl(self.out / "rollouts" / f"step_{batch.step:06d}.jsonl", rows)

    # -- validation ------------------------------------------------------------------------
    def validate(self, step: int) -> dict[str, Any]:
        """Greedy rollouts on the validation questions: val.jsonl's line, whose F1 curve picks
        the checkpoint (:meth:`finish`)."""
        from calibadv.agent.rollouts import rollout, score
        from calibadv.evaluate.metrics import summarise

        self.model.eval()
        with _progress(len(self.val_q), f"validation @ {step}") as bar:
            trajs = rollout(self.val_q, self.tok, self.agent_cfg, self.greedy, self.search_fn,
                            progress=bar)
        for tr, q in zip(trajs, self.val_q, strict=True):
            score(tr, q, self.prethink, self.require_search)
        s = summarise(trajs)
        return {"step": step, "f1": s["f1"], "em": s["em"], "format_rate": s["format_rate"],
                "high_ppl_ratio": s["high_ppl_ratio"], "mean_searches": s["mean_searches"]}

    # -- the run -----------------------------------------------------------------------------
    def train(self) -> int:
        """Steps from the resume point to the end, validating and saving on schedule."""
        from calibadv.train import checkpoint as ckpt

        out, t = self.out, self.t
        _truncate_log(out / "metrics.jsonl", self.start_step)
        _truncate_log(out / "val.jsonl", self.start_step)
        wall0 = time.time()
        if self.val_q and t.val_before_train and self.start_step == 0:
            append_jsonl(out / "val.jsonl", self.validate(0))
        for step in range(self.start_step + 1, self.steps + 1):
            metrics = self.step(step)
            append_jsonl(out / "metrics.jsonl", metrics)
            log.info("step %d: reward %.3f format %.3f", step, metrics["reward_mean"],
                     metrics["format_rate"])
            if self.val_q and (step % t.val_every == 0 or step == self.steps):
                append_jsonl(out / "val.jsonl", self.validate(step))
            if step % t.save_every == 0 or step == self.steps:
                ckpt.save(out, step, self.model, self.tok, self.optimizer, **self._extra_state())
        if ckpt.latest(out) is None:  # zero steps requested: the start point is the result
            ckpt.save(out, 0, self.model, self.tok, self.optimizer, **self._extra_state())
        self.finish(time.time() - wall0)
        return 0

    def _extra_state(self) -> dict[str, Any]:
        """What a checkpoint's trainer state holds beside the optimiser: the value head."""
        return {"critic": self.critic.state_dict()} if self.critic is not None else {}

    def finish(self, wall_s: float) -> None:
        """Select the checkpoint (the newest, or the last before a validation collapse),
        export it as final/ and mark the run done."""
        from calibadv.evaluate.collapse import collapse_step, select_checkpoint
        from calibadv.train import checkpoint as ckpt

        val = read_jsonl(self.out / "val.jsonl") if (self.out / "val.jsonl").exists() else []
        collapse = collapse_step([r["step"] for r in val], [r["f1"] for r in val],
                                 self.t.collapse_delta, self.t.collapse_window) if val else None
        chosen, reason = select_checkpoint(ckpt.saved_steps(self.out), collapse)
        ckpt.export_hf(ckpt.step_dir(self.out, chosen), self.out / "final")
        atomic_write_json(self.out / "selection.json",
                          {"step": chosen, "collapse_step": collapse, "reason": reason})
        atomic_write_json(self.out / "done.json",
                          {"steps": self.steps, "wall_s": wall_s, "backend": "local"})



def _pad_list(tensors: list, width: int) -> list:
    import torch.nn.functional as F

    return [F.pad(x, (0, width - x.shape[1])) for x in tensors]


def _pad_hidden(tensors: list, width: int):
    """(B, width, H) from per-chunk (b, w, H) hidden states."""
    import torch
    import torch.nn.functional as F

    return torch.cat([F.pad(x, (0, 0, 0, width - x.shape[1])) for x in tensors])


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def run(spec: RunSpec, out_dir: Path, dry_run: bool = False) -> int:
    """Backend entry point (``calibadv.train.backends``): train ``spec`` into ``out_dir``."""
    from calibadv.retrieval.client import make_search_fn
    from calibadv.retrieval.launch import retrieval_url

    out_dir = Path(out_dir)
    if not spec.model.path:
        raise ConfigError("model.path: give the HF directory of the policy to train")
    if not spec.data.train:
        raise ConfigError("data.train: give the training Parquet file (calibadv prepare-data)")
    if dry_run:
        print(json.dumps({"backend": "local", "out": str(out_dir), "spec": spec.to_dict()}, indent=2))
        return 0
    for key, path in (("data.train", spec.data.train), ("data.val", spec.data.val),
                      ("model.path", spec.model.path)):
        if path and not Path(path).exists():  # before the server start-up, not after it
            raise ConfigError(f"{key}: {path} does not exist (run the workflow's earlier steps, "
                              "or fix the path in the run spec)")
    from calibadv.methods.catalog import check_run_data

    check_run_data(spec.method, spec.data.train)  # StepSearch: gold documents in the data
    done = out_dir / "done.json"
    if done.exists():
        log.info("%s exists: the run is already finished", done)
        prev = json.loads(done.read_text())
        if prev.get("steps") == spec.training.steps or spec.training.steps is None:
            return 0
        done.unlink()  # asked for more steps than before: continue from the latest checkpoint
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.resolved.yaml").write_text(dump_run_spec(spec))
    from calibadv.train.judge_scoring import step_judge_for

    with retrieval_url(spec.retrieval) as url, \
            step_judge_for(spec.method, spec.judge, str(out_dir / "judge_server.log")) as judge:
        search_fn = make_search_fn(url, spec.retrieval.topk)
        trainer = LocalTrainer(spec, out_dir, search_fn)
        trainer.step_judge = judge  # None unless calibration.score is judge
        return trainer.train()
