"""The method's registered parts (policy loss knobs, rollout filter) as verl overrides.

Pure: no verl import. The loss name itself is ``actor_rollout_ref.actor.policy_loss.loss_mode``
(set by :func:`calibadv.train.verl.overrides.build_overrides`); this module adds what a
calibadv-registered part needs beyond it:

- a loss with knobs: ``policy_loss._target_`` becomes
  :class:`calibadv.train.loss_config.KnobbedPolicyLossConfig` (verl instantiates the actor
  config through hydra, so the knobs reach ``config.policy_loss.knobs`` in every actor worker)
  and ``+…policy_loss.knobs.<k>=<v>``;
- a filter: ``+algorithm.calibadv.filter.name`` and ``.knobs.<k>``, read by the ``calibadv``
  advantage estimator (:mod:`calibadv.train.verl.estimator`).

Both are checked against the registries exactly as the local backend checks them.
"""

from __future__ import annotations

from typing import Any

from calibadv.errors import ConfigError

POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
LOSS_CONFIG_TARGET = "calibadv.train.loss_config.KnobbedPolicyLossConfig"
FILTER_SECTION = "algorithm.calibadv.filter"


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
    return out
