"""verl plugin (entry point ``verl.plugins: calibadv``): registers our parts in verl.

``import verl`` imports this module in every process that imports verl (driver, TaskRunner,
agent-loop workers). Registration is deferred to the moment verl imports the module that
owns each registry, so ``import verl`` costs no more than before and a process that never
builds a trainer never imports one:

=============================================  =============================================
verl module imported                           we register
=============================================  =============================================
``verl.trainer.ppo.core_algos``                advantage estimator ``calibadv``
``verl.trainer.ppo.core_algos``                policy losses of :mod:`calibadv.methods.losses`
``verl.trainer.ppo.v1``                        trainer mode ``calibadv``
``verl.experimental.agent_loop.agent_loop``    agent loop ``calibadv_search``
``verl.utils.model``                           value-head loader with the configured attention
                                               (:mod:`calibadv.train.verl.valuehead`)
=============================================  =============================================

verl only logs a plugin's import error at DEBUG level, so failures are kept in
:data:`ERRORS` and :func:`check_registered` (called by the launcher) raises with them.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable

from calibadv.train.verl import AGENT_LOOP_NAME, ESTIMATOR_NAME, TRAINER_MODE

#: registration name → formatted traceback of the failure, for check_registered.
ERRORS: dict[str, str] = {}


def _guarded(name: str, fn: Callable[[], object]) -> Callable[[object], None]:
    def hook(_module: object) -> None:
        try:
            fn()
            ERRORS.pop(name, None)
        except Exception:  # noqa: BLE001 - reported by check_registered, never swallowed there
            ERRORS[name] = traceback.format_exc()

    return hook


def _register_estimator() -> None:
    from calibadv.train.verl.estimator import register

    register()


def _register_losses() -> None:
    from calibadv.methods.losses import register_in_verl

    register_in_verl()


def _register_trainer() -> None:
    importlib.import_module("calibadv.train.verl.trainer")


def _register_agent_loop() -> None:
    importlib.import_module("calibadv.train.verl.agent_loop")


def _register_valuehead() -> None:
    from verl.utils import model as verl_model

    from calibadv.train.verl.valuehead import install as install_valuehead

    install_valuehead(verl_model)


HOOKS: dict[str, tuple[str, Callable[[], None]]] = {
    "estimator": ("verl.trainer.ppo.core_algos", _register_estimator),
    "trainer": ("verl.trainer.ppo.v1", _register_trainer),
    "agent_loop": ("verl.experimental.agent_loop.agent_loop", _register_agent_loop),
    "losses": ("verl.trainer.ppo.core_algos", _register_losses),
    "valuehead": ("verl.utils.model", _register_valuehead),
}


def install() -> None:
    """Run each registration as soon as (or right now if) verl imports its module."""
    from wrapt import register_post_import_hook

    for name, (module, fn) in HOOKS.items():
        register_post_import_hook(_guarded(name, fn), module)


def registered() -> dict[str, bool]:
    """Import verl's registries and say which of our names they hold."""
    importlib.import_module("verl")
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.utils import model as verl_model

    from calibadv.train.verl.valuehead import load_valuehead_model

    return {
        "estimator": ESTIMATOR_NAME in core_algos.ADV_ESTIMATOR_REGISTRY,
        "trainer": TRAINER_MODE in TRAINER_REGISTRY,
        "agent_loop": AGENT_LOOP_NAME in _agent_loop_registry,
        "losses": _losses_registered(core_algos.POLICY_LOSS_REGISTRY),
        "valuehead": verl_model.load_valuehead_model is load_valuehead_model,
    }


def _losses_registered(registry: dict[str, object]) -> bool:
    from calibadv.methods.catalog import names
    from calibadv.methods.registry import LOSSES

    return all(registry.get(name) is LOSSES.get(name).fn for name in names(LOSSES))


def check_registered() -> None:
    """Raise ``CalibAdvError`` naming every part of the plugin verl does not know."""
    from calibadv.errors import CalibAdvError

    try:
        status = registered()
    except Exception as err:  # noqa: BLE001 - missing verl extras (transfer_queue, cachetools)
        raise CalibAdvError(
            f"cannot import verl's trainer/agent-loop registries ({type(err).__name__}: {err}); "
            "install the GPU environment (envs/train-gpu.yaml, docs/verl-backend.md)"
        ) from err
    missing = [k for k, ok in status.items() if not ok]
    if missing:
        details = "\n".join(f"--- {k}:\n{ERRORS.get(k, '(plugin not loaded)')}" for k in missing)
        raise CalibAdvError(
            f"calibadv verl plugin: {', '.join(missing)} not registered. Is calibadv installed "
            "in this environment (pip install -e .) and VERL_USE_EXTERNAL_PLUGINS not 'none'?\n"
            + details
        )


install()
