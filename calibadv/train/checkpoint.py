"""Checkpoints of the local backend: HF directories + trainer state, written atomically.

Layout: ``checkpoints/step_{N:06d}/`` holds the HF model and tokenizer, ``checkpoint.json``
(``{"step": N}``, copied along into ``final/``) and ``trainer_state.pt`` (optimiser, RNG
states, and what else the trainer keeps, e.g. PPO's value head under ``critic``). ``checkpoints/latest`` names the newest complete one; it is written only after the
directory is complete, so a kill during a save leaves the previous checkpoint in charge.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibadv.io import atomic_write_json, atomic_write_text


def step_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step_{step:06d}"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(out_dir: Path, step: int, model: Any, tokenizer: Any, optimizer: Any,
         **extra: Any) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; ``extra`` entries (state dicts)
    join the trainer state under their names."""
    final = step_dir(out_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / "checkpoint.json", {"step": step})
    torch.save({**extra, "step": step, "optimizer": optimizer.state_dict(), "rng": rng_state()},
               tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(out_dir / "checkpoints" / "latest", final.name + "\n")
    return final


def latest(out_dir: Path) -> Path | None:
    pointer = out_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").exists() else None


def saved_steps(out_dir: Path) -> list[int]:
    root = out_dir / "checkpoints"
    if not root.exists():
        return []
    return sorted(
        json.loads((p / "checkpoint.json").read_text())["step"]
        for p in root.glob("step_*")
        if (p / "trainer_state.pt").exists()
    )


def load_trainer_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "trainer_state.pt", weights_only=False)


def export_hf(src: Path, dst: Path) -> None:
    """Copy a checkpoint's HF files (not the trainer state) to ``dst``, replacing it atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("trainer_state.pt"))
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
