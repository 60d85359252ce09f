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
  ``.knobs.<k>``, dispatched by the same verl estimator through :data:`calibadv.methods.registry.ESTIMATORS`;
- an estimator verl runs with its own machinery (:data:`NATIVE_ESTIMATORS`: ``gae``, PPO with
  verl's critic): ``algorithm.adv_estimator`` is verl's, its knobs become verl's
  ``algorithm.*`` keys (γ, λ, the KL penalty in the reward) and the critic's settings
  (:func:`calibadv.train.verl.overrides.build_overrides` adds the critic model);
- a token reward other than ``task`` (StepSearch's): ``+algorithm.calibadv.reward.name``, read by
  the trainer mode, which rewrites verl's ``rm_scores`` with it before verl's advantage.

Both are checked against the registries exactly as the local backend checks them.
"""

from __future__ import annotations

from typing import Any

from calibadv.errors import ConfigError

POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
LOSS_CONFIG_TARGET = "calibadv.train.loss_config.KnobbedPolicyLossConfig"
FILTER_SECTION = "algorithm.calibadv.filter"
ESTIMATOR_SECTION = "algorithm.calibadv.estimator"
REWARD_SECTION = "algorithm.calibadv.reward"


def _gae_overrides(knobs: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """The ``gae`` estimator's knobs in verl's keys: GAE, the KL penalty in the reward with a
    fixed controller (StepSearch's ``algorithm.kl_ctrl.kl_coef``) and the critic's lr/clip."""
    return [("algorithm.gamma", knobs["gamma"], False), ("algorithm.lam", knobs["lam"], False),
            ("algorithm.kl_penalty", knobs["kl_penalty"], False),
            ("algorithm.kl_ctrl.type", "fixed", False),
            ("algorithm.kl_ctrl.kl_coef", knobs["kl_coef"], False),
            ("critic.optim.lr", knobs["critic_lr"], False),
            ("critic.cliprange_value", knobs["cliprange_value"], False)]


#: Our estimators that verl computes itself: name → (verl's ``adv_estimator``, knobs → overrides).
NATIVE_ESTIMATORS = {"gae": ("gae", _gae_overrides)}


def verl_estimator(method: dict[str, Any]) -> tuple[str | None, bool]:
    """(verl's ``adv_estimator`` when verl computes the method's estimator itself, else None;
    whether the KL penalty goes into the reward)."""
    from calibadv.methods.catalog import method_part

    name, knobs = method_part(method, "estimator")
    if name not in NATIVE_ESTIMATORS:
        return None, False
    return NATIVE_ESTIMATORS[name][0], float(knobs.get("kl_coef", 0.0)) > 0


def part_overrides(method: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """``(key, value, new)`` per override; ``new`` keys are added with hydra's ``+``."""
    from calibadv.methods.catalog import loss_knobs, method_part
    from calibadv.methods.registry import DEFAULT_FILTER

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
    name, fknobs = method_part(method, "filter")
    if name != DEFAULT_FILTER:
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
    from calibadv.methods.catalog import part_knobs
    from calibadv.methods.registry import DEFAULT_ESTIMATOR, DEFAULT_ROLLOUT

    shape = method.get("rollout") or {}
    sname = shape.get("name", DEFAULT_ROLLOUT)
    part_knobs("rollout", sname, shape.get("knobs"), "method.rollout")
    if sname != DEFAULT_ROLLOUT:
        raise ConfigError(
            f"method.rollout.name = {sname!r}: verl's agent loop grows independent rollouts only; "
            "tree rollouts need a custom rollout (re-generation from intermediate states) that "
            "the verl backend does not support yet; run this method with backend: local "
            "(docs/baselines.md, Tree-GRPO)"
        )
    est = method.get("estimator") or {}
    ename = est.get("name", DEFAULT_ESTIMATOR)
    eknobs = part_knobs("estimator", ename, est.get("knobs"), "method.estimator")
    out = _reward_overrides(method)
    if ename in NATIVE_ESTIMATORS:
        return out + NATIVE_ESTIMATORS[ename][1](eknobs)
    if ename == DEFAULT_ESTIMATOR:  # the verl estimator's own default: nothing to add
        return out
    return out + [(f"{ESTIMATOR_SECTION}.name", ename, True),
                  *((f"{ESTIMATOR_SECTION}.knobs.{k}", v, True) for k, v in eknobs.items())]


def _reward_overrides(method: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """A token reward other than ``task`` for the trainer mode; it only means something to an
    estimator that reads token rewards, so any other pairing is refused."""
    from calibadv.methods.catalog import method_part
    from calibadv.methods.registry import DEFAULT_REWARD, ESTIMATORS

    name, knobs = method_part(method, "reward")
    if name == DEFAULT_REWARD:
        return []
    ename = method_part(method, "estimator")[0]
    if "values" not in ESTIMATORS.get(ename).needs:
        raise ConfigError(
            f"method.reward.name = {name!r} places rewards on tokens, which only an estimator "
            f"that reads token rewards uses (gae); method.estimator.name is {ename!r}"
        )
    return [(f"{REWARD_SECTION}.name", name, True),
            *((f"{REWARD_SECTION}.knobs.{k}", v, True) for k, v in knobs.items())]
