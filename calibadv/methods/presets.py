"""Method registry: named training methods as data (``config/methods.yaml``).

A method is a bundle of switches (PreThink, format rule, calibration, policy loss, rollout
filter), never a code path: both training backends read the resolved dict. The policy loss and
the filter name registered parts whose knobs are checked here (:mod:`calibadv.methods.registry`). Presets
may inherit with ``base: other`` and the workflow config may add or override presets
(``extra_presets``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from calibadv.methods.advantage import CalibConfig
from calibadv.errors import ConfigError
from calibadv.methods.registry import DEFAULT_ESTIMATOR, DEFAULT_REWARD, DEFAULT_ROLLOUT

__all__ = ["ENV_VAR", "default_methods_path", "load_presets", "get_method", "list_methods",
           "base_chain"]

ENV_VAR = "CALIBADV_METHODS"
_TOP_KEYS = {"description", "base", "prethink", "require_search", "calibration", "loss", "filter",
             "estimator", "rollout", "reward"}
_LOSS_DEFAULTS = {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"}
# ``loss: {name, knobs}`` as every part; ``loss_mode`` (verl's key, the resolved form) is an alias
# of ``name``; ``loss_agg_mode`` is verl's aggregation of the loss, not an entry's knob
_LOSS_KEYS = {"name", *_LOSS_DEFAULTS, "knobs"}
_FILTER_KEYS = {"name", "knobs"}
_NO_FILTER = "none"
# registered parts named by ``name`` with ``knobs``, and the entry a preset gets when it names none
_NAMED_PARTS = {"filter": _NO_FILTER, "estimator": DEFAULT_ESTIMATOR, "rollout": DEFAULT_ROLLOUT,
                "reward": DEFAULT_REWARD}
# verl's aggregation modes (verl.trainer.ppo.core_algos.agg_loss)
_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def default_methods_path() -> Path:
    """``$CALIBADV_METHODS`` if set, else ``config/methods.yaml`` of the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config" / "methods.yaml"


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
    for key in ("calibration", "loss", *_NAMED_PARTS):
        if key in preset and not isinstance(preset[key], Mapping):
            raise ConfigError(f"{where}.{key} must be a mapping, got {preset[key]!r}")
    loss = preset.get("loss", {})
    for key, part, allowed in (("loss", loss, _LOSS_KEYS),
                               *((k, preset.get(k, {}), _FILTER_KEYS) for k in _NAMED_PARTS)):
        unknown = sorted(set(part) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(f'{where}.{key}.{k}' for k in unknown)}; "
                f"allowed: {sorted(allowed)}"
            )
        if "knobs" in part and not isinstance(part["knobs"], Mapping):
            raise ConfigError(f"{where}.{key}.knobs must be a mapping, got {part['knobs']!r}")
    for key in ("name", "loss_mode"):
        if key in loss and not isinstance(loss[key], str):
            raise ConfigError(f"{where}.loss.{key} must be a string, got {loss[key]!r}")
    if "name" in loss and "loss_mode" in loss and loss["name"] != loss["loss_mode"]:
        raise ConfigError(
            f"{where}.loss names two losses: name = {loss['name']!r} and its alias loss_mode = "
            f"{loss['loss_mode']!r}; keep only loss.name"
        )
    if "loss_agg_mode" in loss and loss["loss_agg_mode"] not in _AGG_MODES:
        raise ConfigError(
            f"{where}.loss.loss_agg_mode = {loss['loss_agg_mode']!r} is not one of {list(_AGG_MODES)}"
        )


def _all_presets(extra_presets: Mapping[str, Any] | None, path: str | Path | None) -> dict[str, Any]:
    presets = load_presets(path)
    presets.update({str(k): v for k, v in (extra_presets or {}).items()})
    for name, preset in presets.items():
        _check_preset(name, preset)
    return {name: _loss_named(preset) for name, preset in presets.items()}


def _loss_named(preset: Mapping[str, Any]) -> Mapping[str, Any]:
    """The preset with ``loss.name`` written as ``loss.loss_mode``, the key verl and the
    resolved method use (the two are one key: ``_check_preset`` refused a preset giving both
    different values)."""
    loss = preset.get("loss")
    if not loss or "name" not in loss:
        return preset
    out = dict(preset)
    out["loss"] = {("loss_mode" if k == "name" else k): v for k, v in loss.items()}
    return out


def _resolve(name: str, presets: Mapping[str, Any], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in chain:
        raise ConfigError(f"methods.{name}: base chain loops ({' -> '.join(chain + (name,))})")
    if name not in presets:
        where = f"methods.{chain[-1]}.base" if chain else "method"
        raise ConfigError(f"{where}: unknown method {name!r}; known methods: {sorted(presets)}")
    preset = presets[name]
    merged: dict[str, Any] = {"calibration": {}, "loss": {}, **{k: {} for k in _NAMED_PARTS}}
    if "base" in preset:
        merged = _resolve(preset["base"], presets, chain + (name,))
    for key, value in preset.items():
        if key == "base":
            continue
        if key in ("calibration", "loss", *_NAMED_PARTS):
            merged[key] = _merge_part(merged.get(key, {}), value)
        else:
            merged[key] = value
    return merged


def _merge_part(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A part inherited from ``base`` overridden key by key; naming another registered entry
    (``loss_mode``/``name``) starts its knobs afresh, since knobs belong to one entry."""
    out = {**copy.deepcopy(dict(old)), **copy.deepcopy(dict(new))}
    switched = any(k in new and new[k] != old.get(k) for k in ("loss_mode", "name"))
    if "knobs" in old and "knobs" in new and not switched:
        out["knobs"] = {**old["knobs"], **new["knobs"]}
    elif switched and "knobs" not in new:
        out.pop("knobs", None)
    return out


def _resolve_parts(name: str, merged: Mapping[str, Any]) -> dict[str, Any]:
    """``loss`` and ``filter`` with their registered entries' knobs checked and completed.

    ``knobs`` / ``filter`` appear only for parts that have them, so presets that use neither
    (the CalibAdv ladder) resolve exactly as before the registries existed."""
    from calibadv.methods.catalog import loss_knobs, part_knobs

    loss = {**_LOSS_DEFAULTS, **merged.get("loss", {})}
    knobs = loss_knobs(loss["loss_mode"], loss.pop("knobs", None), f"methods.{name}.loss")
    if knobs:
        loss["knobs"] = knobs
    out: dict[str, Any] = {"loss": loss}
    filt = dict(merged.get("filter") or {})
    fname = filt.get("name", _NO_FILTER)
    if not isinstance(fname, str):
        raise ConfigError(f"methods.{name}.filter.name must be a string, got {fname!r}")
    fknobs = part_knobs("filter", fname, filt.get("knobs"), f"methods.{name}.filter")
    if fname != _NO_FILTER:
        out["filter"] = {"name": fname, "knobs": fknobs}
    out.update(_resolve_named(name, merged))
    return out


def _resolve_named(name: str, merged: Mapping[str, Any]) -> dict[str, Any]:
    """``estimator``, ``rollout`` and ``reward`` with knobs checked; only when not the default
    entry, so presets that name none resolve exactly as before these registries existed."""
    from calibadv.methods.catalog import part_knobs

    out: dict[str, Any] = {}
    for key in ("estimator", "rollout", "reward"):
        part = dict(merged.get(key) or {})
        pname = part.get("name", _NAMED_PARTS[key])
        if not isinstance(pname, str):
            raise ConfigError(f"methods.{name}.{key}.name must be a string, got {pname!r}")
        knobs = part_knobs(key, pname, part.get("knobs"), f"methods.{name}.{key}")
        if pname != _NAMED_PARTS[key]:
            out[key] = {"name": pname, "knobs": knobs}
    return out


def get_method(
    name: str,
    extra_presets: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """The resolved preset: ``name``, ``description``, ``prethink``, ``require_search``,
    ``calibration`` (every CalibConfig field), ``loss`` (every loss field; ``knobs`` for a loss
    that has them) and, for a method with a rollout filter, ``filter`` (``name``, ``knobs``);
    likewise ``estimator``, ``rollout`` and ``reward`` for a method that names a non-default one."""
    from calibadv.methods.catalog import check_composition

    presets = _all_presets(extra_presets, path)
    merged = _resolve(name, presets)
    calib = CalibConfig.from_dict(merged.get("calibration"), where=f"methods.{name}.calibration")
    method = {
        "name": name,
        "description": merged.get("description", ""),
        "prethink": merged.get("prethink", False),
        "require_search": merged.get("require_search", False),
        "calibration": calib.to_dict(),
        **_resolve_parts(name, merged),
    }
    check_composition(method, f"methods.{name}")
    return method


def base_chain(name: str, extra_presets: Mapping[str, Any] | None = None,
               path: str | Path | None = None) -> list[str]:
    """``name`` and the presets it inherits from through ``base:``, nearest first (what
    ``calibadv methods show`` prints, so inherited knobs are never silent)."""
    presets = _all_presets(extra_presets, path)
    chain = [name]
    while "base" in presets.get(chain[-1], {}):
        if presets[chain[-1]]["base"] in chain:
            break  # get_method reports the loop
        chain.append(presets[chain[-1]]["base"])
    return chain


def list_methods(extra_presets: Mapping[str, Any] | None = None, path: str | Path | None = None) -> list[str]:
    """Names of every preset (file order, then workflow additions)."""
    return list(_all_presets(extra_presets, path))
