"""verl's ``PolicyLossConfig`` plus the knobs of our registered losses.

verl builds the actor config from hydra with ``_target_`` instantiation, so pointing
``actor_rollout_ref.actor.policy_loss._target_`` here lets ``policy_loss.knobs`` (a plain
mapping, validated by :mod:`calibadv.methods.registry`) reach the loss function in every actor worker;
the local backend builds the same class (:func:`calibadv.train.policy.actor_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verl.workers.config import PolicyLossConfig

#: The hydra ``_target_`` of this class (what the verl overrides set).
TARGET = f"{__name__}.KnobbedPolicyLossConfig"


@dataclass
class KnobbedPolicyLossConfig(PolicyLossConfig):
    """``PolicyLossConfig`` with ``knobs``: the settings of a calibadv-registered loss."""

    knobs: dict[str, Any] = field(default_factory=dict)
