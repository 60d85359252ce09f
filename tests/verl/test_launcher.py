"""The launcher: dry-run command lines, and turning verl's outputs into our run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibadv.errors import ConfigError
from calibadv.io import read_jsonl
from calibadv.train.backends import run_backend
from calibadv.train.verl import launcher
from calibadv.train.verl.overrides import RunPaths
from calibadv.train.verl.signals import step_metrics


def test_dry_run_prints_the_main_ppo_command_and_touches_nothing(make_spec, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_backend(make_spec(), out, dry_run=True) == 0
    text = capsys.readouterr().out
    assert "-m verl.trainer.main_ppo" in text
    for piece in ("algorithm.adv_estimator=calibadv", "trainer.v1.trainer_mode=calibadv",
                  "actor_rollout_ref.rollout.n=5", "data.train_batch_size=512",
                  "actor_rollout_ref.actor.optim.lr=5e-07", "trainer.resume_mode=auto",
                  "reward.custom_reward_function.path=pkg://calibadv.train.verl.reward"):
        assert piece in text, piece
    assert not out.exists()


def test_dry_run_names_the_server_the_launcher_would_start(make_spec, tmp_path, capsys):
    spec = make_spec(retrieval={"url": None, "corpus": "c.jsonl", "index": "i.faiss",
                                "encoder": "bundled:minilm"})
    launcher.run(spec, tmp_path, dry_run=True)
    assert launcher.DRY_RUN_URL in capsys.readouterr().out


def test_multinode_dry_run_prints_the_ray_script(make_spec, tmp_path, capsys):
    spec = make_spec(resources={"nodes": 2, "gpus": 8, "cpus": 32})
    launcher.run(spec, tmp_path, dry_run=True)
    script = capsys.readouterr().out
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    assert "--head" in script and "--num-cpus=32" in script and "--num-gpus=8" in script
    # every Ray node is a job step that holds the node's GPUs (clusters bind GPUs per step)
    ray_steps = [line for line in script.splitlines() if "ray.scripts.scripts" in line
                 and line.lstrip().startswith("srun")]
    assert len(ray_steps) == 2
    assert all("--gres=gpu:8" in line and "--cpus-per-task=32" in line for line in ray_steps)
    assert "trainer.nnodes=2" in script
    # joining an existing Ray cluster forbids num_cpus in ray.init: the last override wins
    main = [line for line in script.splitlines() if "verl.trainer.main_ppo" in line][0]
    assert main.rstrip().endswith("ray_kwargs.ray_init.num_cpus=null")


def test_multinode_outside_slurm_fails_before_any_work(make_spec, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    spec = make_spec(resources={"nodes": 2, "gpus": 8, "cpus": 32})
    with pytest.raises(ConfigError, match="SLURM_JOB_NODELIST"):
        launcher.run(spec, tmp_path / "run")


def test_finished_run_is_not_redone(make_spec, tmp_path):
    (tmp_path / "done.json").write_text(json.dumps({"steps": 20, "backend": "verl"}))
    assert launcher.run(make_spec(training={"steps": 20}), tmp_path) == 0


# -- after verl: logs, checkpoints, selection ------------------------------------------------
EXTRAS = [{"reward_extra_info": {"score": s, "f1": s, "em": 0.0, "format_ok": True},
           "ppl": 3.0, "num_searches": 1, "response_len": 40, "num_generated": 30,
           "token_prob_sum": 15.0} for s in (0.0, 0.5, 1.0)]


def train_record(step: int, reward_shift: float = 0.0) -> dict:
    extras = [{**e, "reward_extra_info": {**e["reward_extra_info"],
                                          "score": e["reward_extra_info"]["score"] + reward_shift}}
              for e in EXTRAS]
    data = step_metrics(extras, {"c_mean": 0.4, "c_hist": {"0": 0.5, "1": 0.5},
                                 "empty_silver_frac": 0.25})
    data.update({"actor/entropy": 0.9, "actor/pg_loss": -0.01, "actor/pg_clipfrac": 0.002,
                 "actor/grad_norm": 0.3, "actor/lr": 5e-7, "training/epoch": 0,
                 "timing_s/step": 809.0, "critic/score/mean": 0.5})
    return {"step": step, "data": data}


def val_record(step: int, f1: float) -> dict:
    src = "hotpotqa"
    return {"step": step, "data": {f"val-core/{src}/reward/mean@1": f1,
                                   f"val-aux/{src}/score/mean@1": f1,
                                   f"val-aux/{src}/gated_em/mean@1": f1 / 2,
                                   f"val-aux/{src}/format_ok/mean@1": 0.9,
                                   f"val-aux/{src}/high_ppl/mean@1": 0.1,
                                   f"val-aux/{src}/num_searches/mean@1": 1.5}}


def write_log(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """A real (tiny) Qwen2 HF directory, as verl's hf_model checkpoint content holds."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    d = tmp_path_factory.mktemp("hf")
    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


def fake_verl_run(out: Path, hf: Path, steps: list[int]) -> RunPaths:
    """The files verl leaves: per-step actor checkpoints with an HF copy."""
    import shutil

    paths = RunPaths(out)
    for s in steps:
        shutil.copytree(hf, paths.verl_checkpoints / f"global_step_{s}" / "actor" / "huggingface")
    return paths


def test_metrics_have_the_local_backends_schema(tmp_path):
    paths = RunPaths(tmp_path)
    write_log(paths.attempt_log(1), [val_record(0, 0.3), train_record(1), train_record(2)])
    assert launcher.convert_logs(paths) == (2, 1)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    row = rows[0]
    for key in ("epoch", "time_s", "reward_mean", "f1_mean", "em_mean", "format_rate", "entropy",
                "token_prob_mean", "ppl_mean", "high_ppl_ratio", "valid_searches_mean",
                "response_len_mean", "loss", "pg_clipfrac", "grad_norm", "lr", "c_mean",
                "c_hist", "empty_silver_frac"):
        assert key in row, key
    assert row["reward_mean"] == pytest.approx(0.5) and row["time_s"] == 809.0
    assert row["c_hist"] == {"0": 0.5, "1": 0.5} and row["token_prob_mean"] == 0.5
    assert "critic/score/mean" not in row
    val = read_jsonl(tmp_path / "val.jsonl")
    assert val == [{"step": 0, "f1": 0.3, "em": 0.15, "format_rate": 0.9,
                    "high_ppl_ratio": 0.1, "mean_searches": 1.5}]


def test_a_resumed_attempt_replaces_the_steps_it_redid(tmp_path):
    paths = RunPaths(tmp_path)
    write_log(paths.attempt_log(1), [train_record(1), train_record(2), train_record(3)])
    write_log(paths.attempt_log(2), [train_record(3, reward_shift=0.1), train_record(4)])
    launcher.convert_logs(paths)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["reward_mean"] == pytest.approx(0.6)


def test_each_launch_logs_to_a_new_attempt_file(tmp_path, make_spec):
    from calibadv.train.verl.overrides import build_overrides

    paths = RunPaths(tmp_path)
    write_log(paths.attempt_log(1), [train_record(1)])
    assert launcher._attempt(paths) == 2
    overrides = build_overrides(make_spec(), tmp_path, "http://x:1", attempt=2)
    assert any(o.endswith("metrics_attempt002.jsonl") for o in overrides)


def test_finish_selects_the_last_checkpoint_before_collapse(tmp_path, make_spec, tiny_hf_model):
    spec = make_spec(training={"collapse_delta": 0.1, "collapse_window": 1})
    paths = fake_verl_run(tmp_path, tiny_hf_model, [5, 10, 15, 20])
    write_log(paths.attempt_log(1),
              [val_record(0, 0.2)] + [train_record(s) for s in range(1, 21)]
              + [val_record(5, 0.4), val_record(10, 0.5), val_record(15, 0.2), val_record(20, 0.1)])
    selection = launcher.finish(spec, paths, wall_s=12.0)
    assert selection == {"step": 10, "collapse_step": 15,
                         "reason": "last checkpoint before the collapse at step 15"}
    assert json.loads((tmp_path / "selection.json").read_text()) == selection
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000020"
    for s in (5, 10, 15, 20):
        assert (tmp_path / "checkpoints" / f"step_{s:06d}" / "config.json").exists()
    final = tmp_path / "final"
    assert json.loads((final / "checkpoint.json").read_text())["step"] == 10
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(final)  # a loadable HF directory
    done = json.loads((tmp_path / "done.json").read_text())
    assert done == {"steps": 20, "wall_s": 12.0, "backend": "verl"}


def test_finish_without_checkpoints_is_an_error(tmp_path, make_spec):
    from calibadv.errors import CalibAdvError

    write_log(RunPaths(tmp_path).attempt_log(1), [train_record(1)])
    with pytest.raises(CalibAdvError, match="no checkpoint"):
        launcher.finish(make_spec(), RunPaths(tmp_path), wall_s=1.0)


def test_retrieval_server_beside_the_trainer_runs_on_cpu_by_default(make_spec):
    assert launcher.retrieval_device(make_spec()) == ("cpu", {"CUDA_VISIBLE_DEVICES": ""})
    spare = make_spec(verl={"retrieval_device": "cuda:7"}, resources={"gpus": 7, "cpus": 32})
    assert launcher.retrieval_device(spare) == ("cuda:7", {})


def test_finish_keeps_the_hf_copies_of_pruned_saves(tmp_path, make_spec, compose_config,
                                                    tiny_hf_model):
    """With max_ckpt_to_keep=1 only the last FSDP save survives; the selection still sees the
    HF copies the checkpoint callback exported at every save."""
    from calibadv.train.verl.checkpoints import ExportAndPrune
    from calibadv.train.verl.overrides import build_overrides

    spec = make_spec(training={"collapse_delta": 0.1, "collapse_window": 1},
                     verl={"max_ckpt_to_keep": 1})
    config = compose_config(build_overrides(spec, tmp_path, "http://x:1"))
    callback = ExportAndPrune(config=config)
    paths = RunPaths(tmp_path)
    for s in (5, 10, 15, 20):
        fake_verl_run(tmp_path, tiny_hf_model, [s])
        callback.on_save(trainer=None, global_step=s,
                         checkpoint_dir=str(paths.verl_checkpoints / f"global_step_{s}"))
    assert sorted(p.name for p in paths.verl_checkpoints.iterdir()) == ["global_step_20"]
    write_log(paths.attempt_log(1), [train_record(s) for s in range(1, 21)]
              + [val_record(5, 0.4), val_record(10, 0.5), val_record(15, 0.2), val_record(20, 0.1)])
    selection = launcher.finish(spec, paths, wall_s=3.0)
    assert selection["step"] == 10 and selection["collapse_step"] == 15
    final = json.loads((tmp_path / "final" / "checkpoint.json").read_text())
    assert final["step"] == 10


def test_a_save_without_an_hf_copy_is_never_pruned(tmp_path, tiny_hf_model):
    import shutil

    from calibadv.train.verl.checkpoints import export_checkpoint, prune_saves

    paths = fake_verl_run(tmp_path, tiny_hf_model, [1, 2, 3])
    shutil.rmtree(paths.verl_checkpoints / "global_step_1" / "actor" / "huggingface")
    (paths.verl_checkpoints / "global_step_1" / "actor" / "model.pt").write_text("shards")
    export_checkpoint(paths, 2)
    assert prune_saves(paths, keep=1) == [2]  # step 1 has no export yet, step 3 is the newest
    assert (paths.verl_checkpoints / "global_step_1").exists()


def test_the_hf_copy_is_hard_linked_and_outlives_the_pruned_save(tmp_path, tiny_hf_model):
    import shutil

    from calibadv.train.verl.checkpoints import export_checkpoint

    paths = fake_verl_run(tmp_path, tiny_hf_model, [4])
    src = paths.verl_checkpoints / "global_step_4" / "actor" / "huggingface" / "model.safetensors"
    dst = export_checkpoint(paths, 4) / "model.safetensors"
    assert dst.stat().st_ino == src.stat().st_ino  # no second copy on disk
    shutil.rmtree(paths.verl_checkpoints / "global_step_4")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(dst.parent)
