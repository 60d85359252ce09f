"""verl 0.9.1's own FSDP2 actor and critic workers for two steps on CPU, then a resume (issue 29).

The run itself is ``tests/verl/fsdp_cpu_steps.py`` in a fresh process (it must choose verl's
platform before verl's modules are imported); what is real and what stands in is listed there.
This file checks what it reports and leaves on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def test_two_fsdp2_steps_with_a_critic_on_cpu_save_validate_log_and_resume(tmp_path,
                                                                           tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "verl" / "fsdp_cpu_steps.py"),
                           str(tmp_path), str(tiny_model_dir)], env=env, capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FSDP_CPU_REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-4000:] + proc.stderr[-8000:]
    report = json.loads(lines[-1].removeprefix("FSDP_CPU_REPORT "))
    print(f"FSDP2 CPU run: {report['wall_s']} s")

    # verl's update ran and changed the weights; its metrics were logged every step
    assert report["weights_changed"]
    for step in ("1", "2"):
        assert "actor/pg_loss" in report["steps"][step], report["steps"][step]
    # the critic: verl's value-head engine loaded through our loader with sdpa, trained
    assert report["critic_class"] == "FSDPQwen2ForTokenClassification"  # fully_shard wraps it
    assert report["critic_attention"] == "sdpa"
    for step in ("1", "2"):
        logged = report["steps"][step]
        assert any("vf_loss" in k for k in logged) and "critic/values/mean" in logged, logged
    # saves with hf_model, exported and pruned by our callback
    run = tmp_path / "run"
    ckpts = run / "verl_checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (ckpts / "global_step_2" / "actor" / "huggingface").is_dir()
    assert not (ckpts / "global_step_1" / "actor").exists()
    assert (ckpts / "global_step_2" / "critic").is_dir()
    assert not (ckpts / "global_step_1" / "critic").exists()
    for s in (1, 2):
        assert (run / "checkpoints" / f"step_{s:06d}" / "model.safetensors").exists()
    # verl's file logger → our metrics.jsonl / val.jsonl
    n_metrics, n_val = report["convert_logs"]
    assert n_metrics == 2 and n_val == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("loss" in r for r in rows)
    # resume_mode=auto: a new trainer and worker load step 2's shards
    assert report["resumed_global_steps"] == 2
    assert report["resumed_weights_equal"] and report["resumed_critic_equal"]
