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


# -- issue 29: the StepSearch critic loads with the configured attention ---------------------
def _critic_model_config(make_spec, compose_config, model_dir):
    """The critic's HFModelConfig as verl's v1 trainer builds it (``omega_conf_to_dataclass``
    of ``config.critic``, ``trainer/ppo/v1/trainer_base.py`` ``_init_workers``)."""
    from verl.utils.config import omega_conf_to_dataclass

    from calibadv.train.verl.overrides import build_overrides

    spec = make_spec("stepsearch", model={"path": str(model_dir)})
    cfg = compose_config(build_overrides(spec, model_dir / "run", "http://x:1"))
    return omega_conf_to_dataclass(cfg.critic).model


def test_the_critic_loads_with_sdpa_through_the_plugin(make_spec, compose_config,
                                                       tiny_model_dir):
    """What verl's FSDP engine does for a value model (``workers/engine/fsdp/transformer_impl.py``
    ``_build_module``: import ``load_valuehead_model`` at call time, call it with the model
    config): before issue 29 it passed flash_attention_2 and failed without flash-attn/trl."""
    import torch

    import verl  # noqa: F401  (loads the plugin)
    from verl.utils.model import load_valuehead_model

    from calibadv.train.verl import valuehead

    assert load_valuehead_model is valuehead.load_valuehead_model
    model_config = _critic_model_config(make_spec, compose_config, tiny_model_dir)
    assert model_config.hf_config._attn_implementation == "sdpa"
    hf_config = model_config.hf_config
    hf_config.num_labels = 1  # as _build_module sets before loading
    critic = load_valuehead_model(local_path=model_config.local_path, torch_dtype=torch.float32,
                                  model_config=hf_config, trust_remote_code=False)
    assert critic.config._attn_implementation == "sdpa"
    assert type(critic).__name__ == "Qwen2ForTokenClassification"
    values = critic(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert values.shape == (1, 3, 1)


def test_the_plugin_check_names_a_missing_valuehead_loader(monkeypatch):
    from verl.utils import model as verl_model

    from calibadv.errors import CalibAdvError
    from calibadv.train.verl.plugin import check_registered, registered

    assert registered()["valuehead"] is True
    monkeypatch.setattr(verl_model, "load_valuehead_model", verl_model._verl_load_valuehead_model)
    with pytest.raises(CalibAdvError, match="valuehead not registered"):
        check_registered()


def test_the_gpu_env_installs_the_critics_trl_as_verl_pins_it():
    """trl is verl's value-head fallback; verl pins it in its ``fsdp`` extra, which the GPU
    env does not install whole (it pulls a flash-attn build)."""
    from importlib.metadata import requires
    from pathlib import Path

    import yaml

    pins = [r.split(";")[0].strip() for r in requires("verl") or []
            if r.startswith("trl") and 'extra == "fsdp"' in r]
    env = yaml.safe_load((Path(__file__).parents[2] / "envs" / "train-gpu.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins and pins[0] in pip
