#!/usr/bin/env python
"""Short local runs of method presets on one synthetic world, side by side: the SAPO (t, w)
sweep and the baselines' measured signals (docs/baselines.md).

Every run uses the training/agent settings of a workflow config (default config/tiny.yaml)
and the same seed, so runs differ only in the method. The world directory is what the tiny
DAG (or tests/agent/conftest.py) builds: ``world/{corpus,train,dev}.jsonl``, ``index.faiss``,
``train.parquet``, ``dev.parquet`` and the SFT start point ``sft/``.

    python scripts/method_sweep.py --world-dir /tmp/w --out-dir /tmp/sweep \\
        --methods search-r1 llds --sapo-grid 0.8,0.95 0.1,1.0 --steps 12

Runs that already finished (``done.json``) are reused, so a killed sweep resumes. Writes
``summary.json`` and ``summary.md`` in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

SIGNALS = ("sapo_kl", "sapo_low_frac", "llds_loss", "llds_active_frac", "void_frac",
           "void_masked", "void_dropped")


def run_spec(world: Path, config: dict[str, Any], method: dict[str, Any], steps: int, name: str):
    from calibadv.spec import run_spec_from_dict

    training = {k: v for k, v in config["training"].items()}
    training.update(steps=steps, dump_rollouts_at=[], save_every=steps)
    return run_spec_from_dict({
        "name": name, "backend": "local", "seed": config.get("seed", 0),
        "model": {"path": str(world / "sft"), "name": "tiny", "dtype": "float32"},
        "method": method,
        "data": {"train": str(world / "train.parquet"), "val": str(world / "dev.parquet"),
                 "val_size": config["data"]["val_size"]},
        "retrieval": {"corpus": str(world / "world" / "corpus.jsonl"),
                      "index": str(world / "index.faiss"), "encoder": "bundled:minilm",
                      "topk": 3, "topk_retrieval": 3, "server": "thread"},
        "agent": config["agent"], "training": training,
    })


def summarise(out: Path, name: str, method: dict[str, Any], wall_s: float) -> dict[str, Any]:
    from calibadv.io import read_jsonl

    metrics = read_jsonl(out / "metrics.jsonl")
    val = read_jsonl(out / "val.jsonl")
    row: dict[str, Any] = {
        "run": name, "loss": method["loss"]["loss_mode"], "knobs": method["loss"].get("knobs", {}),
        "filter": method.get("filter"), "steps": len(metrics), "wall_s": round(wall_s, 1),
        "reward_mean": mean(m["reward_mean"] for m in metrics),
        "val_f1": [round(v["f1"], 4) for v in val], "val_steps": [v["step"] for v in val],
        "val_f1_last": val[-1]["f1"] if val else None,
        "val_f1_best": max(v["f1"] for v in val) if val else None,
    }
    for key in SIGNALS:
        values = [m[key] for m in metrics if key in m]
        if values:
            row[key] = {"mean": mean(values), "max": max(values), "per_step": values}
    return row


def evaluate_final(out: Path, spec: Any, data: Path) -> dict[str, Any]:
    """Greedy F1/EM of ``out/final`` on ``data`` (cached in ``out/eval_final/metrics.json``)."""
    from calibadv.evaluate.run import evaluate

    cached = out / "eval_final" / "metrics.json"
    if not cached.exists():
        evaluate(spec, out / "final", data, "dev", out / "eval_final", batch_size=64)
    m = json.loads(cached.read_text())
    return {"eval_n": m["n"], "eval_f1": m["f1"], "eval_em": m["em"], "eval_format": m["format_rate"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--config", type=Path, default=Path("config/tiny.yaml"),
                   help="workflow config whose training/agent/data settings the runs use")
    p.add_argument("--methods", nargs="*", default=[], help="presets to run as they are")
    p.add_argument("--sapo-grid", nargs=2, metavar=("T_LIST", "W_LIST"),
                   help="comma-separated t and w values: one sapo-search run per pair")
    p.add_argument("--override", action="append", default=[], metavar="PRESET:JSON",
                   help="extra preset, e.g. 'simpletir-early:{\"base\":\"simpletir\",...}'")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--eval-data", type=Path, default=None,
                   help="verl Parquet to evaluate every run's final checkpoint on (greedy), e.g. "
                        "all dev questions: the 16-question validation is too coarse to rank runs")
    args = p.parse_args(argv)

    from calibadv.methods.presets import get_method
    from calibadv.train.local import run

    config = yaml.safe_load(args.config.read_text())
    extra: dict[str, Any] = {}
    for item in args.override:
        key, _, body = item.partition(":")
        extra[key] = json.loads(body)
    names = list(args.methods) + list(extra)
    if args.sapo_grid:
        for t in args.sapo_grid[0].split(","):
            for w in args.sapo_grid[1].split(","):
                key = f"sapo-t{t}-w{w}"
                extra[key] = {"base": "sapo-search", "loss": {"knobs": {"t": float(t), "w": float(w)}}}
                names.append(key)
    rows = []
    for name in names:
        method = get_method(name, extra_presets=extra)
        out = args.out_dir / name
        t0 = time.time()
        run(run_spec(args.world_dir, config, method, args.steps, name), out)
        wall = json.loads((out / "done.json").read_text())["wall_s"] if (out / "done.json").exists() else time.time() - t0
        rows.append(summarise(out, name, method, wall))
        if args.eval_data is not None:
            rows[-1].update(evaluate_final(out, run_spec(args.world_dir, config, method, args.steps, name),
                                           args.eval_data))
        print(json.dumps({k: rows[-1][k] for k in ("run", "reward_mean", "val_f1", "wall_s")}), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    lines = ["| run | knobs / filter | reward (mean over steps) | val F1 per validation | "
             "final F1 / EM on --eval-data | signal mean (max) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        sig = "; ".join(f"{k} {r[k]['mean']:.4g} ({r[k]['max']:.4g})" for k in SIGNALS if k in r)
        desc = json.dumps(r["knobs"] or (r["filter"] or {}).get("knobs") or {})
        final = (f"{r['eval_f1']:.3f} / {r['eval_em']:.3f} (n={r['eval_n']})" if "eval_f1" in r
                 else "—")
        lines.append(f"| {r['run']} | {desc} | {r['reward_mean']:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in r['val_f1'])} | {final} | {sig or '—'} |")
    (args.out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
