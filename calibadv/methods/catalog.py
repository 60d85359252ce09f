"""The filled registries: what a preset's part names and knobs resolve to.

:mod:`calibadv.methods.registry` defines the registries and knobs; the part modules
(:mod:`~calibadv.methods.estimators`, :mod:`~calibadv.methods.filters`,
:mod:`~calibadv.methods.losses`, :mod:`~calibadv.methods.token_rewards`,
:mod:`~calibadv.methods.rollout_shapes`) fill them with their decorators. This module imports
those part modules and answers questions about a method's parts, so that the registry itself
never imports the modules that register into it (no import circle). Torch-free at import: the
workflow validates presets while Snakemake parses the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from calibadv.errors import ConfigError
from calibadv.methods.registry import (
    DEFAULT_ESTIMATOR,
    DEFAULT_FILTER,
    DEFAULT_REWARD,
    DEFAULT_ROLLOUT,
    ESTIMATORS,
    FILTERS,
    LOSSES,
    REWARDS,
    ROLLOUTS,
    VERL_BUILTIN_LOSSES,
    Registry,
    check_knobs,
)

__all__ = ["loss_knobs", "part_knobs",
           "method_part", "method_needs", "names", "check_run_data", "check_composition",
           "prompt_flags", "check_shared_prompt"]

#: Calibration switches that act only through the ``calibadv`` estimator, and their "off" values.
_CALIBRATION_SWITCHES = {"soft_penalty": "none", "rebalance": False}


def _load_parts() -> None:
    """Import the modules whose decorators fill the registries (torch-free at import)."""
    import calibadv.methods.estimators  # noqa: F401
    import calibadv.methods.filters  # noqa: F401
    import calibadv.methods.losses  # noqa: F401
    import calibadv.methods.rollout_shapes  # noqa: F401
    import calibadv.methods.token_rewards  # noqa: F401


def loss_knobs(loss_mode: str, knobs: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Validated knobs of a policy loss: ours declare theirs, verl's built-ins take none."""
    _load_parts()
    if loss_mode in LOSSES:
        return LOSSES.resolve(loss_mode, knobs, where)
    if loss_mode in VERL_BUILTIN_LOSSES:
        return check_knobs({}, knobs, f"{where}.knobs")
    raise ConfigError(
        f"{where}.loss_mode = {loss_mode!r} is not a policy loss; ours: {', '.join(LOSSES.names())}; "
        f"verl's: {', '.join(VERL_BUILTIN_LOSSES)}"
    )


#: The registries of a method's named parts (``loss`` has :func:`loss_knobs`: verl's
#: built-in losses live outside the registry).
_PART_REGISTRIES = {"estimator": ESTIMATORS, "rollout": ROLLOUTS, "reward": REWARDS,
                    "filter": FILTERS}
_PART_DEFAULTS = {"estimator": DEFAULT_ESTIMATOR, "rollout": DEFAULT_ROLLOUT,
                  "reward": DEFAULT_REWARD, "filter": DEFAULT_FILTER}


def part_knobs(kind: str, name: str, knobs: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Validated knobs of the ``kind`` part (``estimator``, ``rollout``, ``reward`` or
    ``filter``) registered as ``name``; a ConfigError naming ``where`` otherwise."""
    _load_parts()
    return _PART_REGISTRIES[kind].resolve(name, knobs, where)


def method_part(method: Mapping[str, Any], key: str) -> tuple[str, dict[str, Any]]:
    """(name, checked knobs) of a method's ``estimator``, ``rollout``, ``reward`` or ``filter``
    (the registry's default entry when the preset names none)."""
    part = method.get(key) or {}
    name = part.get("name", _PART_DEFAULTS[key])
    return name, part_knobs(key, name, part.get("knobs"), f"method.{key}")


def method_needs(method: Mapping[str, Any]) -> set[str]:
    """What the method's estimator and reward need beyond the rollouts (:attr:`Part.needs`)."""
    _load_parts()
    return {*ESTIMATORS.get(method_part(method, "estimator")[0]).needs,
            *REWARDS.get(method_part(method, "reward")[0]).needs}


def names(registry: Registry) -> Sequence[str]:
    _load_parts()
    return registry.names()


def check_run_data(method: Mapping[str, Any], train: str) -> None:
    """For a method whose parts need gold documents (the ``stepsearch`` reward), the training
    Parquet ``train`` must carry them
    (:func:`calibadv.methods.stepsearch_reward.check_stepsearch_data`); called by both backends
    before anything starts."""
    if "gold_docs" not in method_needs(method):
        return
    from calibadv.data.questions import load_questions
    from calibadv.methods.stepsearch_reward import check_stepsearch_data

    check_stepsearch_data([q.stepsearch_fields() for q in load_questions(train)], str(train))


def check_composition(method: Mapping[str, Any], where: str) -> None:
    """ConfigError naming both parts when a resolved method combines entries that do not work
    together: an entry's ``works_with`` (e.g. the ``stepsearch`` reward only with the ``gae``
    estimator, ``tree_grpo`` only with ``tree`` rollouts), and calibration switches turned on
    under an estimator that does not read them (``reads_calibration``)."""
    _load_parts()
    registries = {"estimator": ESTIMATORS, "rollout": ROLLOUTS, "reward": REWARDS, "filter": FILTERS}
    chosen = {kind: method_part(method, kind)[0] for kind in registries}
    for kind, registry in registries.items():
        part = registry.get(chosen[kind])
        for other, allowed in part.works_with.items():
            if chosen.get(other) not in allowed:
                raise ConfigError(
                    f"{where}: {kind} {chosen[kind]!r} works only with {other} "
                    f"{' or '.join(repr(a) for a in allowed)}, but this preset's {other} is "
                    f"{chosen.get(other)!r}; set {other}.name: {allowed[0]} or choose another {kind}"
                )
    estimator = ESTIMATORS.get(chosen["estimator"])
    if not estimator.reads_calibration:
        calib = method.get("calibration") or {}
        readers = [n for n in ESTIMATORS.names() if ESTIMATORS.get(n).reads_calibration]
        for key, off in _CALIBRATION_SWITCHES.items():
            if key in calib and calib[key] != off:
                raise ConfigError(
                    f"{where}: calibration.{key} = {calib[key]!r} acts only through estimator "
                    f"{' or '.join(repr(r) for r in readers)}, but this preset's estimator is "
                    f"{chosen['estimator']!r}, which ignores it; set calibration.{key}: "
                    f"{str(off).lower() if isinstance(off, bool) else off} or estimator.name: {readers[0]}"
                )


def prompt_flags(method: Mapping[str, Any]) -> tuple[bool, bool]:
    """(prethink, require_search) of a resolved method: the prompt it samples with and the
    format rule it scores by."""
    return bool(method.get("prethink", False)), bool(method.get("require_search", False))


def check_shared_prompt(methods: Mapping[str, Mapping[str, Any]], sample_method: str) -> None:
    """The counterfactual update's one batch is sampled with ``sample_method``'s prompt and
    every method scores it: a method with other PreThink/require_search flags fails the format
    check on every rollout, scores them all 0 and makes no update, a null row that would read
    as "the method leaves the policy alone". One rule for the DAG's config check
    (:mod:`calibadv.workflow.validation`) and the job (:mod:`calibadv.train.counterfactual`)."""
    want = prompt_flags(methods[sample_method])
    for name, method in methods.items():
        if prompt_flags(method) != want:
            raise ConfigError(
                f"counterfactual.methods: {name!r} scores rollouts with prethink/require_search "
                f"= {prompt_flags(method)}, but the batch is sampled with {sample_method!r}'s "
                f"{want}: its format rule would score every sampled rollout 0. Use the GRPO "
                "method on the same prompt (e.g. prethink for PreThink sampling) instead"
            )
