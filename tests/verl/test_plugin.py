"""The plugin reaches verl through its entry point, and the launcher's check catches a miss."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from calibadv.io import atomic_write_text
from calibadv.spec import dump_run_spec

PROBE = """
import sys
import verl  # loads every verl.plugins entry point
from verl.trainer.ppo import core_algos
import verl.trainer.ppo.v1
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
print("estimator", "calibadv" in core_algos.ADV_ESTIMATOR_REGISTRY)
print("trainer", "calibadv" in TRAINER_REGISTRY)
print("agent_loop", "calibadv_search" in _agent_loop_registry)
"""


def test_entry_point_is_declared_by_the_installed_package():
    eps = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert eps.get("calibadv") == "calibadv.train.verl.plugin"


def _probe(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=600, check=True)
    return out.stdout


def test_plain_import_verl_registers_every_part():
    """A fresh process that never imports calibadv: verl's own plugin loading does it."""
    assert _probe({"VERL_USE_EXTERNAL_PLUGINS": "auto"}).split() == [
        "estimator", "True", "trainer", "True", "agent_loop", "True"]


def test_launcher_check_fails_loudly_when_a_part_is_missing(monkeypatch):
    from verl.trainer.ppo import core_algos

    from calibadv.errors import CalibAdvError
    from calibadv.train.verl.plugin import check_registered

    check_registered()  # everything is there
    monkeypatch.delitem(core_algos.ADV_ESTIMATOR_REGISTRY, "calibadv")
    with pytest.raises(CalibAdvError, match="estimator not registered"):
        check_registered()


def test_registration_errors_are_reported_not_swallowed(monkeypatch):
    from calibadv.train.verl import plugin as verl_plugin

    def broken() -> None:
        raise ImportError("no module named vllm_thing")

    hook = verl_plugin._guarded("agent_loop", broken)
    hook(None)
    try:
        assert "vllm_thing" in verl_plugin.ERRORS["agent_loop"]
    finally:
        verl_plugin.ERRORS.pop("agent_loop", None)


def test_cli_train_dry_run_prints_the_command(tmp_path, make_spec, capsys):
    from calibadv.cli import main

    spec_file = tmp_path / "spec.yaml"
    atomic_write_text(spec_file, dump_run_spec(make_spec()))
    assert main(["train", "--spec", str(spec_file), "--out", str(tmp_path / "run"),
                 "--dry-run"]) == 0
    assert "verl.trainer.main_ppo" in capsys.readouterr().out
