"""Full CalibAdv ``calibrate`` vs verl's ``compute_grpo_outcome_advantage``, same process.

Batch of the paper's scale: 512 questions × 5 rollouts = 2,560 rollouts × 4,096 response
tokens, 4 search turns of 3 documents each plus an answer turn, observations masked.
Prints the median time of each and the ratio (target: CalibAdv within 1.5× of GRPO).

    python benchmarks/bench_advantage.py [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch

from calibadv.methods.advantage import CalibConfig, calibrate
from calibadv.methods.presets import get_method


def make_batch(groups: int, group_size: int, length: int, turns: int, docs_per_turn: int, seed: int):
    """A synthetic rollout batch shaped like real Search-R1 rollouts."""
    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(300)]
    batch = groups * group_size
    mask = torch.zeros(batch, length, dtype=torch.float32)
    scores = torch.zeros(batch)
    format_ok, index, spans, doc_ids, thinks = [], [], [], [], []
    for g in range(groups):
        pool = [f"doc{g}_{k}" for k in range(12)]
        for _ in range(group_size):
            i = len(index)
            index.append(f"uid-{g}")
            scores[i] = rng.choice([0.0, 0.0, 0.0, 0.4, 0.5, 2 / 3, 0.8, 1.0, 1.0])
            format_ok.append(rng.random() > 0.05)
            pos, row_spans, row_docs, row_thinks = 0, [], [], []
            for t in range(turns + 1):
                gen = rng.randint(200, 330) if t < turns else rng.randint(20, 80)
                row_spans.append([pos, pos + gen])
                mask[i, pos : pos + gen] = 1
                words = rng.choices(vocab, k=rng.randint(20, 60))
                if row_thinks and rng.random() < 0.2:  # a near-repeat of the previous think
                    words = row_thinks[-1].split()[:-2] + ["again", "now"]
                row_thinks.append(" ".join(words))
                pos += gen
                if t < turns:
                    row_docs.append(rng.sample(pool, docs_per_turn - 1) + [f"other{rng.randrange(10**6)}"])
                    pos += rng.randint(450, 520)  # the masked observation
            spans.append(row_spans)
            doc_ids.append(row_docs)
            thinks.append(row_thinks)
    return scores, format_ok, mask, index, spans, doc_ids, thinks


def _median_time(fn, repeats: int, sync) -> tuple[float, float]:
    """Median wall time and median process CPU time (the latter is robust to a busy machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--groups", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--score", default=None, help="override calibration.score (official | paper)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scores, format_ok, mask, index, spans, doc_ids, thinks = make_batch(
        args.groups, args.group_size, args.length, turns=4, docs_per_turn=3, seed=0
    )
    device = torch.device(args.device)
    mask = mask.to(device)
    scores = scores.to(device)
    last = (mask * torch.arange(mask.shape[1], device=device)).argmax(dim=1)
    token_rewards = torch.zeros_like(mask)
    token_rewards[torch.arange(mask.shape[0], device=device), last] = scores
    uid = np.array(index, dtype=object)
    calibration = get_method("calibadv")["calibration"]
    if args.score:
        calibration["score"] = args.score
    config = CalibConfig.from_dict(calibration)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_grpo():
        compute_grpo_outcome_advantage(token_rewards, mask, uid)

    def run_calib():
        calibrate(scores, format_ok, mask, index, spans, doc_ids, thinks, config)

    run_grpo(), run_calib()  # warm-up (allocator, lazy imports)
    t_grpo = _median_time(run_grpo, args.repeats, sync)
    t_calib = _median_time(run_calib, args.repeats, sync)
    _, stats = calibrate(scores, format_ok, mask, index, spans, doc_ids, thinks, config)
    print(f"calibration.score = {config.score}")
    print(f"batch: {mask.shape[0]} rollouts x {mask.shape[1]} tokens on {device}, {torch.get_num_threads()} threads")
    print(f"scored steps: {stats['num_scored_steps']}, softpen_frac: {stats['softpen_frac']:.3f}, "
          f"empty_silver_frac: {stats['empty_silver_frac']:.3f}")
    for label, k in (("wall", 0), ("cpu", 1)):
        print(f"[{label}] verl compute_grpo_outcome_advantage: {t_grpo[k] * 1000:8.1f} ms, "
              f"calibadv calibrate (calibadv preset): {t_calib[k] * 1000:8.1f} ms, "
              f"ratio {t_calib[k] / t_grpo[k]:.2f}x (target <= 1.5x; median of {args.repeats})")


if __name__ == "__main__":
    main()
