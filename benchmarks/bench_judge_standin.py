"""The stand-in judge answering freely vs with verdict tokens, same server, same prompts.

Starts one ``transformers serve`` of the stand-in (SmolLM2-135M-Instruct, the directory
``calibadv judge stand-in`` writes) on ``--threads`` CPU threads, samples the steps of a run's
rollout dumps as the embedded default does (``steps: scored``, c = 1), and judges every prompt
twice without a cache: free (``max_tokens`` 12, the strict parser, one re-ask) and constrained
(``judge.verdict_tokens``: one token, logit_bias onto the verdict tokens). Prints the parse
rate and the median and mean seconds per verdict of each, and their ratio.

    python benchmarks/bench_judge_standin.py --model results/synthetic/models/judge/smollm2-135m-instruct \\
        --rollouts results/synthetic/runs/tiny/calibadv/seed_0/rollouts [--per-checkpoint 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter

from calibadv.judge.config import JudgeConfig, open_client
from calibadv.judge.prompt import render
from calibadv.judge.server import LocalServer, serve_judge
from calibadv.judge.steps import sample_cases
from calibadv.proxy import read_dumps


def judge_all(cfg: JudgeConfig, url: str, model: str, prompts: list) -> dict:
    client = open_client(cfg, url, model)  # no cache: every prompt is asked
    verdicts = []
    for p in prompts:  # one at a time: seconds per verdict, as concurrency 1 serves them
        (v,), _ = client.judge([p])
        verdicts.append(v)
    secs = [v.seconds for v in verdicts]
    return {
        "parsed": sum(v.status == "ok" for v in verdicts), "n": len(verdicts),
        "verdicts": dict(Counter(f"{v.verdict:g}" for v in verdicts if v.verdict is not None)),
        "median_s": statistics.median(secs), "mean_s": statistics.fmean(secs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the stand-in's HF directory")
    ap.add_argument("--rollouts", required=True, help="a run's rollouts/ folder")
    ap.add_argument("--per-checkpoint", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    cases = sample_cases(read_dumps(args.rollouts), args.per_checkpoint, 0, 1.0, None, pool="scored")
    prompts = [render(c.view()) for c in cases]
    print(f"{len(prompts)} sampled c = 1 steps over {len({c.step for c in cases})} checkpoints")
    server = LocalServer("transformers", args.model, threads=args.threads)
    base = dict(server="external", model=args.model, model_path=args.model, concurrency=1)
    with serve_judge(server) as url:
        free = judge_all(JudgeConfig(base_url=url, max_tokens=12, **base), url, server.request_model, prompts)
        tokens = judge_all(JudgeConfig(base_url=url, verdict_tokens=True, **base), url,
                           server.request_model, prompts)
    for name, r in (("free answer", free), ("verdict tokens", tokens)):
        print(f"{name:15s} parsed {r['parsed']}/{r['n']} ({100 * r['parsed'] / r['n']:.0f}%), "
              f"verdicts {r['verdicts']}, median {r['median_s']:.2f} s, mean {r['mean_s']:.2f} s per verdict")
    print(f"ratio verdict tokens / free (median s per verdict): {tokens['median_s'] / free['median_s']:.2f}")


if __name__ == "__main__":
    main()
