"""scripts/cluster-smoke.sh: its dry run (exact commands, valid RunSpecs) and its checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibadv.errors import CalibAdvError
from calibadv.spec import load_run_spec
from calibadv.train.verl.smoke import check_run
from tests.verl.test_launcher import fake_verl_run, train_record, val_record, write_log

ROOT = Path(__file__).parents[2]


def test_dry_run_prints_every_command_and_writes_valid_specs(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "cluster-smoke.sh"), "--dry-run",
                          "--work", str(tmp_path), "--gpus", "1", "--cpus", "16"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for command in ("calibadv.cli synth --out-dir", "calibadv.cli build-tiny-model",
                    "calibadv.cli index encode", "calibadv.cli index merge",
                    "calibadv.cli prepare-data", "calibadv.train.verl.smoke spec",
                    f"calibadv.cli train --spec {tmp_path}/spec-2.yaml --out {tmp_path}/run",
                    f"calibadv.cli train --spec {tmp_path}/spec-3.yaml --out {tmp_path}/run",
                    "calibadv.train.verl.smoke check --run", "--resumed-from 2"):
        assert command in text, command
    # the launcher's own dry run: verl's exact command line for the smoke run
    for piece in ("-m verl.trainer.main_ppo", "trainer.total_training_steps=2",
                  "trainer.save_freq=1", "trainer.test_freq=1",
                  "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                  "trainer.n_gpus_per_node=1", "trainer.max_actor_ckpt_to_keep=1",
                  "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"):
        assert piece in text, piece
    assert "nothing was trained" in text
    assert not (tmp_path / "world").exists() and not (tmp_path / "run").exists()
    for steps in (2, 3):
        spec = load_run_spec(tmp_path / f"spec-{steps}.yaml")
        assert spec.backend == "verl" and spec.training.steps == steps
        assert spec.resources.gpus == 1 and spec.verl.max_ckpt_to_keep == 1


def test_unknown_argument_is_refused():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "cluster-smoke.sh"), "--gpu", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown argument --gpu" in out.stderr


def finished_smoke_run(run: Path, hf: Path, make_spec, compose_config) -> None:
    """What two launches of the smoke run leave (steps 1-2, then a resumed step 3)."""
    from calibadv.train.verl import launcher
    from calibadv.train.verl.checkpoints import ExportAndPrune
    from calibadv.train.verl.overrides import RunPaths, build_overrides

    spec = make_spec(verl={"max_ckpt_to_keep": 1}, training={"steps": 3})
    callback = ExportAndPrune(config=compose_config(build_overrides(spec, run, "http://x:1")))
    paths = RunPaths(run)
    for s in (1, 2, 3):
        fake_verl_run(run, hf, [s])
        callback.on_save(trainer=None, global_step=s, checkpoint_dir="")
    write_log(paths.attempt_log(1), [val_record(0, 0.1), train_record(1), val_record(1, 0.2),
                                     train_record(2), val_record(2, 0.3)])
    write_log(paths.attempt_log(2), [train_record(3), val_record(3, 0.3)])
    launcher.finish(spec, paths, wall_s=1.0)


def test_check_accepts_a_finished_resumed_run(tmp_path, make_spec, compose_config,
                                              tiny_model_dir):
    finished_smoke_run(tmp_path, tiny_model_dir, make_spec, compose_config)
    done = check_run(tmp_path, steps=3, resumed_from=2)
    assert "the second attempt resumed at step 3 (trained [3])" in done
    assert "no TransferQueue snapshot in the checkpoints (sync mode)" in done


def test_check_names_what_is_missing(tmp_path, make_spec, compose_config, tiny_model_dir):
    finished_smoke_run(tmp_path, tiny_model_dir, make_spec, compose_config)
    (tmp_path / "verl_checkpoints" / "global_step_3" / "transfer_queue").mkdir()
    with pytest.raises(CalibAdvError, match="no TransferQueue snapshot"):
        check_run(tmp_path, steps=3)
    with pytest.raises(CalibAdvError, match="metrics.jsonl has steps 1..4"):
        check_run(tmp_path, steps=4)
