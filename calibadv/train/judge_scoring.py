"""Judge-scored training (``calibration.score: judge``, paper Table 3), for both backends.

Per training step, :meth:`StepJudge.score` returns the ``judge_scores`` that
:func:`calibadv.methods.advantage.calibrate` feeds to the ``judge`` step scorer:

* Which steps: the intermediate steps of **negative** rollouts (A_i < 0) in **every** group.
  c only changes a negative rollout's step advantages (soft penalty A·(1 − c)); positive and
  zero-advantage rollouts are left unscored (None), so no call is spent on them. Groups with
  an empty silver set are scored too: the judge does not need a correct rollout, which is the
  point of replacing the proxy (the paper's Appendix B names exactly these groups as what an
  external scorer could add).
* A step that searched nothing (an invalid turn: no query, no documents) gets c = 0 without a
  call, as every silver scorer gives it.
* Each remaining step is one prompt (:func:`calibadv.judge.prompt.render`), all sent
  concurrently through one :class:`~calibadv.judge.client.JudgeClient` and its cache.
* A step whose verdict is still missing after the client's retries (or unparsable after the
  re-ask) falls back to the silver score of ``fallback_score`` (0 where the group has no
  silver set), and is counted in the step's metrics (``judge_fallback``) — never silently.
  Above ``judge.max_fallback_frac`` of a training step's judged steps the step fails
  (:class:`JudgeFallbackError`): a "judge-scored" run must not quietly be a silver one.
  Table 3 shows the run's fallback share beside its row.

Metrics added to the step's line of ``metrics.jsonl``: ``judge_time_s`` (wall time of the
judge calls, so Table 3's extra time is measured), ``judge_steps`` (steps sent to the judge),
``judge_requests``, ``judge_duplicates`` (identical steps of the batch, asked once),
``judge_cache_hits``, ``judge_retries``, ``judge_unparsable``,
``judge_failed``, ``judge_fallback``, ``judge_prompt_tokens``, ``judge_completion_tokens``,
``judge_cost_usd``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from calibadv.errors import CalibAdvError, ConfigError
from calibadv.judge.client import JudgeClient
from calibadv.judge.prompt import render
from calibadv.judge.steps import step_views


class JudgeFallbackError(CalibAdvError):
    """Too many steps of one training step fell back to the silver score."""


class StepJudge:
    """Scores the intermediate steps of a training batch with the judge."""

    def __init__(self, client: JudgeClient, fallback_score: str = "official",
                 max_fallback_frac: float = 0.05) -> None:
        self.client = client
        self.fallback_score = fallback_score
        self.max_fallback_frac = max_fallback_frac

    def _check_fallback(self, fallback: int, judged: int, verdicts: Sequence[Any]) -> None:
        if judged and fallback / judged > self.max_fallback_frac:
            errors = sorted({v.error or v.status for v in verdicts if v.verdict is None})
            raise JudgeFallbackError(
                f"{fallback} of {judged} judged steps ({100 * fallback / judged:.0f}%) got no "
                f"verdict and would fall back to the silver score, above judge.max_fallback_frac "
                f"= {self.max_fallback_frac:g}; the judge is failing ({errors[0]}). The answered "
                "verdicts are cached: fix the endpoint and resume, or raise the cap knowingly"
            )

    def score(
        self,
        rollouts: Sequence[Mapping[str, Any]],
        rewards: torch.Tensor,
        format_ok: Any,
        response_mask: torch.Tensor,
        groups: Any,
        config: Any,
    ) -> tuple[list[list[float] | None], dict[str, Any]]:
        """``(judge_scores, metrics)`` for ``calibrate(..., judge_scores=...)``.

        ``rollouts[i]`` needs ``question``, ``golden_answers``, ``queries``, ``thinks``,
        ``doc_ids``, ``turn_spans`` and ``response_text`` (a Trajectory's fields).
        """
        from calibadv.methods.advantage import calibrate

        silver_cfg = dataclasses.replace(config, score=self.fallback_score)
        _, silver = calibrate(
            rewards, format_ok, response_mask, groups,
            [r["turn_spans"] for r in rollouts], [r["doc_ids"] for r in rollouts],
            [r["thinks"] for r in rollouts], silver_cfg,
        )
        adv = silver["rollout_advantage"]
        silver_c = silver["per_step_c"]
        scores: list[list[float] | None] = [None] * len(rollouts)
        prompts, where = [], []
        for i, row in enumerate(rollouts):
            docs = row["doc_ids"]
            if adv[i] >= 0 or not docs:
                continue
            scores[i] = [0.0] * len(docs)
            views = step_views(row)
            for t, view in enumerate(views):
                if docs[t] and view.query:
                    prompts.append(render(view))
                    where.append((i, t))
        t0 = time.monotonic()
        verdicts, acct = self.client.judge(prompts) if prompts else ([], None)
        elapsed = time.monotonic() - t0
        fallback = 0
        for (i, t), v in zip(where, verdicts, strict=True):
            if v.verdict is not None:
                scores[i][t] = float(v.verdict)
            else:
                fallback += 1
                cs = silver_c[i]
                scores[i][t] = float(cs[t]) if cs is not None else 0.0
        self._check_fallback(fallback, len(prompts), verdicts)
        metrics = {
            "judge_time_s": elapsed,
            "judge_steps": len(prompts),
            "judge_requests": acct.requests if acct else 0,
            "judge_duplicates": acct.duplicates if acct else 0,
            "judge_cache_hits": acct.cache_hits if acct else 0,
            "judge_retries": acct.retries if acct else 0,
            "judge_unparsable": acct.unparsable if acct else 0,
            "judge_failed": acct.failed if acct else 0,
            "judge_fallback": fallback,
            "judge_prompt_tokens": acct.prompt_tokens if acct else 0,
            "judge_completion_tokens": acct.completion_tokens if acct else 0,
            "judge_cost_usd": acct.cost_usd if acct else 0.0,
        }
        return scores, metrics


def needs_judge(method: Mapping[str, Any]) -> bool:
    """Whether a resolved method preset scores steps with the judge."""
    return (method.get("calibration") or {}).get("score") == "judge"


def _require_judge_section(judge: Mapping[str, Any] | None) -> None:
    """A judge-scored method with no judge section is a config error, named before any job work."""
    if not judge:
        raise ConfigError(
            "calibration.score = 'judge' needs the run spec's judge section (judge.base_url and "
            "judge.model of an OpenAI-compatible endpoint, or judge.server: local)"
        )


@contextlib.contextmanager
def step_judge_for(method: Mapping[str, Any], judge: Mapping[str, Any] | None,
                   log_path: str | None = None) -> Iterator[StepJudge | None]:
    """The run's :class:`StepJudge` for the block (None unless the method uses the judge);
    starts and stops a local judge server when ``judge.server`` is ``local``."""
    if not needs_judge(method):
        yield None
        return
    _require_judge_section(judge)
    from calibadv.judge.config import JudgeConfig, endpoint, open_client

    cfg = JudgeConfig.from_dict(judge)
    with endpoint(cfg, log_path) as (url, model):
        client = open_client(cfg, url, model)
        try:
            yield StepJudge(client, max_fallback_frac=cfg.max_fallback_frac)
        finally:
            if client.cache is not None:
                client.cache.close()


_VERL_JUDGES: dict[str, StepJudge] = {}


def verl_step_judge(section: Mapping[str, Any]) -> StepJudge:
    """The :class:`StepJudge` of the verl driver process, built once from
    ``algorithm.calibadv.judge`` (the launcher has already started a local server, if any, and
    put its URL there as an external endpoint)."""
    import json

    from calibadv.judge.config import JudgeConfig, open_client

    if not section:
        raise ConfigError(
            "calibration.score = 'judge' needs algorithm.calibadv.judge (the launcher writes it "
            "from the run spec's judge section)"
        )
    key = json.dumps(dict(section), sort_keys=True, default=str)
    if key not in _VERL_JUDGES:
        cfg = JudgeConfig.from_dict(section, where="algorithm.calibadv.judge")
        _VERL_JUDGES[key] = StepJudge(open_client(cfg, str(cfg.base_url), cfg.model),
                                      max_fallback_frac=cfg.max_fallback_frac)
    return _VERL_JUDGES[key]


def dry_run_judge_overrides(method: Mapping[str, Any], judge: Mapping[str, Any] | None) -> list[str]:
    """The judge overrides a dry run shows; a local server is not started (its URL is shown
    as ``<local judge server>``)."""
    if not needs_judge(method) or not judge:
        return []
    shown = dict(judge)
    if shown.get("server") == "local":
        shown.update(server="external", base_url="<local judge server>")
    with verl_judge_overrides(method, shown) as out:
        return out


@contextlib.contextmanager
def verl_judge_overrides(method: Mapping[str, Any], judge: Mapping[str, Any] | None,
                         log_path: str | None = None) -> Iterator[list[str]]:
    """Hydra overrides handing the judge to verl's driver for the block (``[]`` unless the
    method uses the judge). A local server is started here, beside the launcher, and passed
    on as an external endpoint."""
    if not needs_judge(method):
        yield []
        return
    _require_judge_section(judge)
    from calibadv.judge.config import JudgeConfig, endpoint
    from calibadv.train.verl.overrides import hydra_value

    cfg = JudgeConfig.from_dict(judge)
    with endpoint(cfg, log_path) as (url, model):
        live = {**cfg.to_dict(), "server": "external", "base_url": url, "model": model}
        if cfg.server == "local":  # the server started here needs no key
            live["api_key_env"] = None
        if cfg.cache:  # verl runs in the run directory: a relative path would move
            from pathlib import Path

            live["cache"] = str(Path(cfg.cache).resolve())
        if cfg.verdict_tokens and cfg.model_path:  # the driver reads its tokenizer
            from pathlib import Path

            live["model_path"] = str(Path(cfg.model_path).resolve())
        out = []
        for key, value in live.items():
            if key == "price":
                out += [f"+algorithm.calibadv.judge.price.{k}={hydra_value(v)}"
                        for k, v in value.items()]
            else:
                out.append(f"+algorithm.calibadv.judge.{key}={hydra_value(value)}")
        yield out
