"""Registries of the parts a training method is composed of (docs/design.md, "Methods as
compositions").

A method preset (config/methods.yaml) names one entry per part and sets that entry's knobs:

- ``loss``: a policy loss registered in verl (``register_policy_loss``); both backends call the
  same function through ``verl.trainer.ppo.core_algos.get_policy_loss_fn``;
- ``filter``: what happens to rollouts around the advantage (e.g. SimpleTIR's void turns);
- ``estimator``: how a batch of scored rollouts becomes token advantages (``calibadv`` by
  default; GiGPO, MT-GRPO, Tree-GRPO; :mod:`calibadv.methods.estimators`);
- ``rollout``: the shape of a prompt's rollouts (``chains``: independent rollouts, the default;
  ``tree``: Tree-GRPO's trees; :mod:`calibadv.methods.rollout_shapes`);
- ``reward``: where a rollout's reward sits on its tokens (``task``: the run's score on the last
  generated token, the default; ``stepsearch``: StepSearch's step and final rewards;
  :mod:`calibadv.methods.token_rewards`). Only estimators that read token rewards (``gae``) use it.

An entry may declare the entries of other parts it ``works_with`` (the ``stepsearch`` reward
only with the ``gae`` estimator, which reads token rewards; ``tree_grpo`` only with ``tree``
rollouts) and, for an estimator, whether it ``reads_calibration`` (only ``calibadv``: a preset
that switches on a calibration part under another estimator is refused, naming both). A
preset that breaks either fails when it resolves (:func:`calibadv.methods.catalog.check_composition`).

An entry may declare what it ``needs`` beyond the rollouts (``values``: a value model and the
old/reference log-probs, for PPO's GAE; ``gold_docs``: gold paragraphs and sub-query keys in
the training data): a backend provides what an entry needs, or refuses the preset.

Each registry is a dict filled by a decorator, like verl's own registries; each entry declares
its knobs (type, default, allowed values), so a preset's typo or out-of-range value is an error
that names the key and lists what is allowed. This module imports neither torch nor verl: the
workflow validates presets while Snakemake parses the DAG, where a torch import costs seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calibadv.errors import ConfigError

__all__ = ["Knob", "Part", "Registry", "LOSSES", "FILTERS", "ESTIMATORS", "ROLLOUTS", "REWARDS",
           "VERL_BUILTIN_LOSSES", "check_knobs", "DEFAULT_ESTIMATOR", "DEFAULT_ROLLOUT",
           "DEFAULT_REWARD", "DEFAULT_FILTER"]


@dataclass(frozen=True)
class Knob:
    """One setting of a part: its type, default, allowed values/range and what it means."""

    type: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the knob's type, or a ConfigError naming ``where``."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is bool and not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where} must be a {self.type.__name__}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} = {value!r} is not one of {list(self.choices)}")
        if self.min is not None and value < self.min:
            raise ConfigError(f"{where} = {value!r} is below its minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{where} = {value!r} is above its maximum {self.max}")
        return value


def check_knobs(knobs: Mapping[str, Knob], given: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Every knob with its value (given, else default); unknown keys are an error naming them."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(knobs))
    if unknown:
        allowed = ", ".join(sorted(knobs)) or "none"
        raise ConfigError(
            f"unknown knob(s) {', '.join(f'{where}.{k}' for k in unknown)}; allowed: {allowed}"
        )
    return {k: knob.check(given[k], f"{where}.{k}") if k in given else knob.default
            for k, knob in knobs.items()}


@dataclass(frozen=True)
class Part:
    """A registered entry: its name, the function, its knobs and where it comes from."""

    name: str
    fn: Callable[..., Any]
    knobs: Mapping[str, Knob] = field(default_factory=dict)
    description: str = ""
    needs: tuple[str, ...] = ()  # what a backend must provide beyond the rollouts (see module doc)
    # the entries of other part kinds it can be combined with (kind → names; a kind not listed:
    # any), checked when a preset resolves (catalog.check_composition)
    works_with: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reads_calibration: bool = False  # an estimator that reads the calibration switches


class Registry:
    """Name → :class:`Part`, filled by :meth:`register` used as a decorator."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind  # "policy loss", "filter"
        self.where = where  # the preset key it is named under, for errors
        self._parts: dict[str, Part] = {}

    def register(self, name: str, knobs: Mapping[str, Knob] | None = None,
                 description: str = "", needs: tuple[str, ...] = (),
                 works_with: Mapping[str, tuple[str, ...]] | None = None,
                 reads_calibration: bool = False,
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            old = self._parts.get(name)
            if old is not None and old.fn.__qualname__ != fn.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is already registered by {old.fn.__module__}")
            doc = description or (fn.__doc__ or "").split("\n")[0]
            self._parts[name] = Part(name, fn, dict(knobs or {}), doc, tuple(needs),
                                     {k: tuple(v) for k, v in (works_with or {}).items()},
                                     reads_calibration)
            return fn

        return decorator

    def names(self) -> list[str]:
        return list(self._parts)

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def get(self, name: str, where: str | None = None) -> Part:
        if name not in self._parts:
            raise ConfigError(
                f"{where or self.where} = {name!r} is not a registered {self.kind}; "
                f"known: {', '.join(self.names())}"
            )
        return self._parts[name]

    def resolve(self, name: str, knobs: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
        """Validated knobs of entry ``name`` (defaults filled in)."""
        return check_knobs(self.get(name, where).knobs, knobs, f"{where}.knobs")


#: verl 0.9.1's own policy losses (``core_algos.POLICY_LOSS_REGISTRY``; a test keeps this
#: list equal to the installed verl's). They take no knobs of ours: verl reads its own
#: ``PolicyLossConfig``/``ActorConfig`` fields.
VERL_BUILTIN_LOSSES: tuple[str, ...] = (
    "vanilla", "dppo_tv", "dppo_kl", "gspo", "sapo", "gpg", "clip_cov", "kl_cov", "geo_mean",
    "dro", "cispo", "bypass_mode",
)

LOSSES = Registry("policy loss", "loss.loss_mode")
FILTERS = Registry("rollout filter", "filter.name")
ESTIMATORS = Registry("advantage estimator", "estimator.name")
ROLLOUTS = Registry("rollout shape", "rollout.name")
REWARDS = Registry("token reward", "reward.name")
#: The entries a preset gets when it names none (the CalibAdv ladder's).
DEFAULT_ESTIMATOR = "calibadv"
DEFAULT_ROLLOUT = "chains"
DEFAULT_REWARD = "task"
DEFAULT_FILTER = "none"
