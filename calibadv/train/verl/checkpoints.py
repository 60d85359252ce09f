"""Checkpoints of a verl run: a bounded number of resumable FSDP saves, every HF copy kept.

A 7B FSDP save (fp32 weights, optimiser state, HF copy) is ~110 GB and a paper run saves ~21
times, so only ``verl.max_ckpt_to_keep`` resumable saves stay on disk. Choosing the
checkpoint before a collapse (``calibadv.evaluate.collapse``) needs the *weights* of every
saved step, not its optimiser state, so verl calls :class:`ExportAndPrune` after each save
(``trainer.checkpoint_callback_class``): it copies the HF export of the new save to
``checkpoints/step_{N:06d}/`` and removes FSDP saves beyond the newest ``max_ckpt_to_keep``
(verl prunes the saves of the current attempt itself; this also removes those a killed
earlier attempt left behind). The launcher runs the same export once more at the end for
anything a crash skipped.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_json, link_or_copy
from calibadv.train.verl.overrides import RunPaths
from calibadv.train.verl.settings import calibadv_section

log = logging.getLogger(__name__)

STEP_PREFIX = "global_step_"


def verl_steps(paths: RunPaths) -> list[int]:
    """Steps with a resumable FSDP save (``global_step_N/actor``) under ``verl_checkpoints``."""
    root = paths.verl_checkpoints
    if not root.exists():
        return []
    return sorted(int(p.name[len(STEP_PREFIX):]) for p in root.glob(STEP_PREFIX + "*")
                  if p.name[len(STEP_PREFIX):].isdigit() and (p / "actor").is_dir())


def exported_steps(paths: RunPaths) -> list[int]:
    """Steps whose HF copy is complete under ``checkpoints/`` (``checkpoint.json`` written last)."""
    if not paths.exported.exists():
        return []
    return sorted(int(p.name.split("_")[-1]) for p in paths.exported.glob("step_*")
                  if p.name.split("_")[-1].isdigit() and (p / "checkpoint.json").exists())


def _has_weights(d: Path) -> bool:
    return d.is_dir() and (any(d.glob("*.safetensors")) or any(d.glob("pytorch_model*.bin")))


def export_checkpoint(paths: RunPaths, step: int, python: str = sys.executable) -> Path:
    """HF directory of verl's ``global_step_N`` as ``checkpoints/step_{N:06d}`` (idempotent).

    Uses the ``hf_model`` copy verl saved (bf16, ~15 GB for 7B), hard-linked where the file
    system allows; falls back to ``verl.model_merger`` on the FSDP shards when it is missing
    (e.g. a run started without ``hf_model`` in save_contents).
    """
    dst = paths.exported / f"step_{step:06d}"
    if (dst / "checkpoint.json").exists():
        return dst
    actor = paths.verl_checkpoints / f"{STEP_PREFIX}{step}" / "actor"
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf = actor / "huggingface"
    if _has_weights(hf):
        # hard links: instant, no second copy on disk, and the files outlive the pruned save
        shutil.copytree(hf, tmp, copy_function=link_or_copy)
    else:
        cmd = [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
               "--local_dir", str(actor), "--target_dir", str(tmp)]
        if subprocess.run(cmd, check=False).returncode != 0:
            raise CalibAdvError(f"could not export {actor} to HF: {' '.join(cmd)} failed")
        if hf.is_dir():  # tokenizer + config saved beside the shards
            for f in hf.iterdir():
                if f.is_file() and not (tmp / f.name).exists():
                    shutil.copy2(f, tmp / f.name)
    atomic_write_json(tmp / "checkpoint.json", {"step": step, "source": str(actor)})
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def prune_saves(paths: RunPaths, keep: int) -> list[int]:
    """Remove FSDP saves beyond the newest ``keep`` whose HF copy is exported; returns them.

    A save without an exported HF copy is never removed (its weights exist nowhere else).
    """
    steps = verl_steps(paths)
    done = set(exported_steps(paths))
    removed = [s for s in steps[:-keep] if s in done] if keep >= 1 else []
    for s in removed:
        shutil.rmtree(paths.verl_checkpoints / f"{STEP_PREFIX}{s}", ignore_errors=True)
    return removed


def run_paths_of(config: Any) -> RunPaths:
    """The run directory of a verl config: ``algorithm.calibadv.run_dir`` (set by our
    overrides), else the parent of ``trainer.default_local_dir``."""
    run_dir = calibadv_section(config).get("run_dir")
    if not run_dir:
        run_dir = str(Path(config.trainer.default_local_dir).parent)
    return RunPaths(Path(run_dir))


class ExportAndPrune(CheckpointCallback):
    """``trainer.checkpoint_callback_class``: export the HF copy of each save, then prune."""

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str,
                async_save: bool = False, **kwargs: Any) -> None:
        if async_save:  # not durable yet (Megatron only); the launcher exports at the end
            return
        paths = run_paths_of(self.config)
        dst = export_checkpoint(paths, int(global_step))
        keep = self.config.trainer.get("max_actor_ckpt_to_keep", None)
        removed = prune_saves(paths, int(keep)) if keep else []
        log.info("step %d: HF copy in %s; removed FSDP saves of steps %s", global_step, dst,
                 removed)
