"""Registry of training backends.

A backend is a function ``run(spec: RunSpec, out_dir: Path, dry_run: bool = False) -> int``.
Entries name a module and a function rather than importing them, so choosing ``local`` never
imports verl/Ray and choosing ``verl`` never imports the local trainer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from calibadv.errors import ConfigError
from calibadv.spec import RunSpec

BackendFn = Callable[..., int]

_BACKENDS: dict[str, str] = {
    "local": "calibadv.train.local:run",
    "verl": "calibadv.train.verl.launcher:run",
}


#: Per backend, a pure check of a resolved method preset ("module:function"; raises ConfigError
#: when the backend cannot run it): the workflow calls it while building the DAG, so a method
#: a backend cannot run fails in the dry run, not on the cluster.
_METHOD_CHECKS: dict[str, str] = {
    "verl": "calibadv.train.verl.method_parts:check_method",
}


def check_method(backend: str, method: dict) -> None:
    """Raise ConfigError (with the reason) when ``backend`` cannot run ``method``."""
    target = _METHOD_CHECKS.get(backend)
    if target is not None:
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(method)


def register_backend(name: str, target: str) -> None:
    """Register ``target`` ("module:function") as backend ``name`` (e.g. from a plugin)."""
    _BACKENDS[name] = target


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> BackendFn:
    if name not in _BACKENDS:
        raise ConfigError(
            f"backend: unknown training backend {name!r} "
            f"(available: {', '.join(available_backends())})"
        )
    module_name, func_name = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_backend(spec: RunSpec, out_dir: str | Path, dry_run: bool = False) -> int:
    return get_backend(spec.backend)(spec, Path(out_dir), dry_run=dry_run)
