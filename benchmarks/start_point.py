"""How good is an RL start point? Greedy gated F1, and what GRPO's first step would see.

GRPO learns only from groups whose rollouts disagree; CalibAdv's silver set needs a rollout
with reward >= tau in the group. So a start point is judged by two numbers (issue 14, target 1):
its greedy gated F1 on dev questions, and, sampling G rollouts per question at temperature T as
the first RL step does, the share of groups with no rollout >= tau ("empty-silver") and the
share with mixed rewards. Prints the greedy F1 per question kind, then one line per
(temperature, top-p, G).

    python benchmarks/start_point.py --model results/synthetic/models/tiny/sft \
        --world results/synthetic/world --index results/synthetic/index/index.faiss \
        --questions 128 --temperatures 1.0 0.7 --top-p 1.0 0.95 --group-size 4 8
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def group_stats(rewards: Sequence[float], group_size: int, tau: float) -> dict[str, float]:
    """Mean reward, empty-silver share (no reward >= tau) and mixed share of contiguous groups."""
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return {
        "reward": sum(rewards) / len(rewards),
        "empty_silver": sum(all(r < tau for r in g) for g in groups) / len(groups),
        "mixed": sum(len({round(r, 6) for r in g}) > 1 for g in groups) / len(groups),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF directory of the start point")
    p.add_argument("--world", required=True, help="synthetic world folder (corpus.jsonl, dev.jsonl)")
    p.add_argument("--index", required=True, help="FAISS index of the corpus")
    p.add_argument("--qa", default=None, help="QA JSONL (default: WORLD/dev.jsonl)")
    p.add_argument("--questions", type=int, default=128, help="first N questions")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    p.add_argument("--top-p", type=float, nargs="+", default=[1.0],
                   help="nucleus cut(s) to sample with at each temperature (training.top_p)")
    p.add_argument("--group-size", type=int, nargs="+", default=[4],
                   help="rollouts per question (G); several values give one line each")
    p.add_argument("--tau", type=float, default=0.7, help="silver threshold (calibration.tau)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from calibadv.agent.engines import local_generator
    from calibadv.models.policy import load_policy
    from calibadv.retrieval.client import make_search_fn
    from calibadv.agent.rollouts import rollout, score
    from calibadv.agent.types import AgentConfig
    from calibadv.io import read_jsonl
    from calibadv.retrieval.launch import serve
    from calibadv.train.sft import qa_questions

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tok = load_policy(args.model)
    rows = read_jsonl(args.qa or f"{args.world}/dev.jsonl")[: args.questions]
    questions = qa_questions(rows)
    agent = AgentConfig(prethink=False, max_turns=3, max_tokens_per_turn=48,
                        max_response_tokens=400)

    def scored(trajs: list[Any], group: int) -> list[float]:
        for i, t in enumerate(trajs):
            score(t, questions[i // group], False, False)
        return [t.reward for t in trajs]

    with serve("thread", f"{args.world}/corpus.jsonl", args.index, "bundled:minilm") as url:
        search = make_search_fn(url, 3)
        greedy = scored(rollout(questions, tok, agent,
                                local_generator("kv", model, tok, greedy=True), search), 1)
        by_kind: dict[str, list[float]] = defaultdict(list)
        for row, r in zip(rows, greedy, strict=True):
            by_kind[str((row.get("metadata") or {}).get("type"))].append(r)
        print(f"{args.model}: {len(rows)} questions, greedy gated F1 {sum(greedy) / len(greedy):.3f} "
              "(" + ", ".join(f"{k} {sum(v) / len(v):.2f} n={len(v)}"
                              for k, v in sorted(by_kind.items())) + ")")
        for temp in args.temperatures:
            for top_p in args.top_p:
                gen = local_generator("kv", model, tok, temperature=temp, top_p=top_p)
                for g in args.group_size:
                    s = group_stats(scored(rollout(questions, tok, agent, gen, search,
                                                   group_size=g), g), g, args.tau)
                    print(f"  T={temp} top_p={top_p} G={g}: sampled reward {s['reward']:.3f}, "
                          f"empty-silver {s['empty_silver']:.2f}, mixed {s['mixed']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
