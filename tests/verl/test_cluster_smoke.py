"""scripts/cluster-smoke.sh: its dry run (exact commands, valid RunSpecs) and its checks."""

from __future__ import annotations

import json
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
                    "calibadv.train.verl.smoke check --run", "--resumed-from 2",
                    "--method stepsearch",
                    f"calibadv.cli train --spec {tmp_path}/spec-stepsearch-2.yaml "
                    f"--out {tmp_path}/run-stepsearch",
                    f"check --run {tmp_path}/run-stepsearch --steps 2 --critic",
                    f"--corpus {tmp_path}/world/corpus.jsonl"):
        assert command in text, command
    # the launcher's own dry run: verl's exact command line for the smoke run
    for piece in ("-m verl.trainer.main_ppo", "trainer.total_training_steps=2",
                  "trainer.save_freq=1", "trainer.test_freq=1",
                  "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
                  "trainer.n_gpus_per_node=1", "trainer.max_actor_ckpt_to_keep=1",
                  "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"):
        assert piece in text, piece
    assert "+critic.ppo_infer_max_token_len_per_gpu=4096" in text  # the StepSearch dry run
    assert "+critic.model.override_config.attn_implementation=sdpa" in text
    assert "nothing was trained" in text
    assert not (tmp_path / "world").exists() and not (tmp_path / "run").exists()
    for steps in (2, 3):
        spec = load_run_spec(tmp_path / f"spec-{steps}.yaml")
        assert spec.backend == "verl" and spec.training.steps == steps
        assert spec.resources.gpus == 1 and spec.verl.max_ckpt_to_keep == 1
        assert spec.resources.cpus == 16  # never raised past what the allocation has
    ppo = load_run_spec(tmp_path / "spec-stepsearch-2.yaml")
    assert ppo.method["estimator"]["name"] == "gae" and ppo.training.steps == 2


@pytest.mark.parametrize("cpus, units", [(16, 8), (14, 8), (10, 4), (7, 1)])
def test_the_smoke_run_sizes_transfer_queue_to_the_allocation(tmp_path, cpus, units):
    from calibadv.spec import run_spec_from_dict
    from calibadv.train.verl.overrides import build_overrides, min_ray_cpus
    from calibadv.train.verl.smoke import smoke_spec

    spec = run_spec_from_dict(smoke_spec(tmp_path, gpus=1, cpus=cpus, steps=2))
    assert spec.resources.cpus == cpus and min_ray_cpus(1, 1, units) <= cpus
    want = f"transfer_queue.backend.SimpleStorage.num_data_storage_units={units}"
    assert spec.verl_overrides == [want]
    (tmp_path / "model").mkdir(exist_ok=True)
    assert build_overrides(spec, tmp_path / "run", "http://x:1")[-1] == want


def test_a_too_small_smoke_allocation_fails_naming_the_numbers(tmp_path):
    err = subprocess.run([sys.executable, "-m", "calibadv.train.verl.smoke", "spec", "--work",
                          str(tmp_path), "--gpus", "1", "--cpus", "5"],
                         capture_output=True, text=True, cwd=ROOT)
    assert err.returncode == 1
    assert "at least 7 CPUs per node for 1 GPUs on 1 node(s), got 5" in err.stderr
    assert not list(tmp_path.glob("spec-*.yaml"))


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


def test_check_of_the_stepsearch_case_needs_the_critic(tmp_path, make_spec, compose_config,
                                                       tiny_model_dir):
    from calibadv.train.verl.overrides import RunPaths

    finished_smoke_run(tmp_path, tiny_model_dir, make_spec, compose_config)
    with pytest.raises(CalibAdvError, match="critic ran every step"):
        check_run(tmp_path, steps=3, critic=True)
    paths = RunPaths(tmp_path)
    for log in paths.logs.glob("metrics_attempt*.jsonl"):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        for r in rows:
            if any(k.startswith("actor/") for k in r["data"]):
                r["data"].update({"critic/values/mean": 0.1, "critic/critic/vf_loss": 0.2})
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CalibAdvError, match="critic saved with the actor"):
        check_run(tmp_path, steps=3, critic=True)
    (paths.verl_checkpoints / "global_step_3" / "critic").mkdir(parents=True)
    assert "the critic saved with the actor (global_step_3/critic)" in check_run(
        tmp_path, steps=3, critic=True)
