"""The method's registered parts (policy loss knobs, rollout filter) as verl overrides.

Pure: no verl import. The loss name itself is ``actor_rollout_ref.actor.policy_loss.loss_mode``
(set by :func:`calibadv.train.verl.overrides.build_overrides`); this module adds what a
calibadv-registered part needs beyond it:

- a loss with knobs: ``policy_loss._target_`` becomes
  :class:`calibadv.train.loss_config.KnobbedPolicyLossConfig` (verl instantiates the actor
  config through hydra, so the knobs reach ``config.policy_loss.knobs`` in every actor worker)
  and ``+…policy_loss.knobs.<k>=<v>``;
- a filter: ``+algorithm.calibadv.filter.name`` and ``.knobs.<k>``, read by the ``calibadv``
  advantage estimator (:mod:`calibadv.train.verl.estimator`);
- an estimator other than ``calibadv``: ``+algorithm.calibadv.estimator.name`` and
  ``.knobs.<k>``, dispatched by the same verl estimator through :data:`calibadv.parts.ESTIMATORS`.

Both are checked against the registries exactly as the local backend checks them.
"""

from __future__ import annotations

from typing import Any

from calibadv.errors import ConfigError

POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
LOSS_CONFIG_TARGET = "calibadv.train.loss_config.KnobbedPolicyLossConfig"
FILTER_SECTION = "algorithm.calibadv.filter"
ESTIMATOR_SECTION = "algorithm.calibadv.estimator"


def part_overrides(method: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """``(key, value, new)`` per override; ``new`` keys are added with hydra's ``+``."""
    from calibadv.parts import filter_knobs, loss_knobs

    loss = dict(method.get("loss") or {})
    knobs = loss_knobs(loss.get("loss_mode", "vanilla"), loss.get("knobs"), "method.loss")
    if knobs.get("mask_answer"):
        raise ConfigError(
            "method.loss.knobs.mask_answer: LLDS-MA needs the answer tokens, which verl's actor "
            "does not hand a policy loss; run it with backend: local, or set mask_answer: false"
        )
    out: list[tuple[str, Any, bool]] = []
    if knobs:
        out.append((f"{POLICY_LOSS}._target_", LOSS_CONFIG_TARGET, False))
        out += [(f"{POLICY_LOSS}.knobs.{k}", v, True) for k, v in knobs.items()]
    filt = method.get("filter") or {}
    name = filt.get("name", "none")
    fknobs = filter_knobs(name, filt.get("knobs"), "method.filter")
    if name != "none":
        out.append((f"{FILTER_SECTION}.name", name, True))
        out += [(f"{FILTER_SECTION}.knobs.{k}", v, True) for k, v in fknobs.items()]
    return out + _estimator_overrides(method)


def check_method(method: dict[str, Any]) -> None:
    """ConfigError when verl cannot run ``method`` (the workflow's DAG-time check)."""
    part_overrides(method)


def _estimator_overrides(method: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """The estimator name and knobs for the ``calibadv`` verl estimator; a rollout shape other
    than ``chains`` is refused here, at config validation (and so in a dry run), because
    verl's agent loop grows independent rollouts only."""
    from calibadv.parts import DEFAULT_ESTIMATOR, DEFAULT_ROLLOUT, estimator_knobs, rollout_knobs

    shape = method.get("rollout") or {}
    sname = shape.get("name", DEFAULT_ROLLOUT)
    rollout_knobs(sname, shape.get("knobs"), "method.rollout")
    if sname != DEFAULT_ROLLOUT:
        raise ConfigError(
            f"method.rollout.name = {sname!r}: verl's agent loop grows independent rollouts only; "
            "tree rollouts need a custom rollout (re-generation from intermediate states) that "
            "the verl backend does not support yet; run this method with backend: local "
            "(docs/baselines.md, Tree-GRPO)"
        )
    est = method.get("estimator") or {}
    ename = est.get("name", DEFAULT_ESTIMATOR)
    eknobs = estimator_knobs(ename, est.get("knobs"), "method.estimator")
    if ename == DEFAULT_ESTIMATOR:  # the verl estimator's own default: nothing to add
        return []
    return [(f"{ESTIMATOR_SECTION}.name", ename, True),
            *((f"{ESTIMATOR_SECTION}.knobs.{k}", v, True) for k, v in eknobs.items())]
