"""Method registry: named training methods as data (``config/methods.yaml``).

A method is a bundle of switches (PreThink, format rule, calibration, policy loss), never a
code path: both training backends read the resolved dict. Presets may inherit with
``base: other`` and the workflow config may add or override presets (``extra_presets``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from calibadv.advantage import CalibConfig
from calibadv.errors import ConfigError

__all__ = ["ENV_VAR", "default_methods_path", "load_presets", "get_method", "list_methods"]

ENV_VAR = "CALIBADV_METHODS"
_TOP_KEYS = {"description", "base", "prethink", "require_search", "calibration", "loss"}
_LOSS_DEFAULTS = {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"}
# verl's aggregation modes (verl.trainer.ppo.core_algos.agg_loss)
_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def default_methods_path() -> Path:
    """``$CALIBADV_METHODS`` if set, else ``config/methods.yaml`` of the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "config" / "methods.yaml"


def load_presets(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The raw (unresolved) presets of a methods file."""
    path = Path(path) if path is not None else default_methods_path()
    if not path.is_file():
        raise ConfigError(
            f"methods file {path} not found; pass an existing path or set {ENV_VAR}=<file>"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"methods file {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"methods file {path} must map method names to presets")
    return {str(k): v for k, v in data.items()}


def _check_preset(name: str, preset: Any) -> None:
    where = f"methods.{name}"
    if not isinstance(preset, Mapping):
        raise ConfigError(f"{where} must be a mapping of switches, got {type(preset).__name__}")
    unknown = sorted(set(preset) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; allowed: {sorted(_TOP_KEYS)}"
        )
    for key in ("prethink", "require_search"):
        if key in preset and not isinstance(preset[key], bool):
            raise ConfigError(f"{where}.{key} must be true or false, got {preset[key]!r}")
    for key in ("description", "base"):
        if key in preset and not isinstance(preset[key], str):
            raise ConfigError(f"{where}.{key} must be a string, got {preset[key]!r}")
    for key in ("calibration", "loss"):
        if key in preset and not isinstance(preset[key], Mapping):
            raise ConfigError(f"{where}.{key} must be a mapping, got {preset[key]!r}")
    loss = preset.get("loss", {})
    unknown = sorted(set(loss) - set(_LOSS_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.loss.{k}' for k in unknown)}; "
            f"allowed: {sorted(_LOSS_DEFAULTS)}"
        )
    if "loss_mode" in loss and not isinstance(loss["loss_mode"], str):
        raise ConfigError(f"{where}.loss.loss_mode must be a string, got {loss['loss_mode']!r}")
    if "loss_agg_mode" in loss and loss["loss_agg_mode"] not in _AGG_MODES:
        raise ConfigError(
            f"{where}.loss.loss_agg_mode = {loss['loss_agg_mode']!r} is not one of {list(_AGG_MODES)}"
        )


def _all_presets(extra_presets: Mapping[str, Any] | None, path: str | Path | None) -> dict[str, Any]:
    presets = load_presets(path)
    presets.update({str(k): v for k, v in (extra_presets or {}).items()})
    for name, preset in presets.items():
        _check_preset(name, preset)
    return presets


def _resolve(name: str, presets: Mapping[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in chain:
        raise ConfigError(f"methods.{name}: base chain loops ({' -> '.join(chain + (name,))})")
    if name not in presets:
        where = f"methods.{chain[-1]}.base" if chain else "method"
        raise ConfigError(f"{where}: unknown method {name!r}; known methods: {sorted(presets)}")
    preset = presets[name]
    merged: dict[str, Any] = {"calibration": {}, "loss": {}}
    if "base" in preset:
        merged = _resolve(preset["base"], presets, chain + (name,))
    for key, value in preset.items():
        if key == "base":
            continue
        if key in ("calibration", "loss"):
            merged[key] = {**merged.get(key, {}), **copy.deepcopy(dict(value))}
        else:
            merged[key] = value
    return merged


def get_method(
    name: str,
    extra_presets: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """The resolved preset: ``name``, ``description``, ``prethink``, ``require_search``,
    ``calibration`` (every CalibConfig field) and ``loss`` (every loss field)."""
    presets = _all_presets(extra_presets, path)
    merged = _resolve(name, presets)
    calib = CalibConfig.from_dict(merged.get("calibration"), where=f"methods.{name}.calibration")
    return {
        "name": name,
        "description": merged.get("description", ""),
        "prethink": merged.get("prethink", False),
        "require_search": merged.get("require_search", False),
        "calibration": calib.to_dict(),
        "loss": {**_LOSS_DEFAULTS, **merged.get("loss", {})},
    }


def list_methods(extra_presets: Mapping[str, Any] | None = None, path: str | Path | None = None) -> list[str]:
    """Names of every preset (file order, then workflow additions)."""
    return list(_all_presets(extra_presets, path))
