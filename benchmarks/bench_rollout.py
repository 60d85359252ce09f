"""Rollout throughput and seconds per RL step of the local backend on the tiny model (CPU).

Usage (after a tiny world, model, index and SFT start point exist):

    python benchmarks/bench_rollout.py --model results/.../sft --corpus W/corpus.jsonl \
        --index I.faiss --qa W/train.jsonl --questions 4 --group-size 4

Prints rollout tokens/s for greedy and sampled decoding side by side (same process, same
questions: the ratio is the comparable number) and the wall time of one RL step split into
rollout / old-log-prob / update.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--qa", required=True)
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--max-tokens-per-turn", type=int, default=24)
    ap.add_argument("--max-response-tokens", type=int, default=160)
    ap.add_argument("--prethink", action="store_true")
    args = ap.parse_args()

    import torch

    from calibadv.agent.hf import HFGenerator
    from calibadv.agent.runner import load_policy, make_search_fn, rollout
    from calibadv.agent.types import AgentConfig
    from calibadv.io import read_jsonl
    from calibadv.retrieval.launch import serve_in_background
    from calibadv.train.policy import actor_config, pad_batch, policy_loss, response_logprobs
    from calibadv.train.sft import qa_questions

    torch.manual_seed(0)
    model, tok = load_policy(args.model)
    questions = qa_questions(read_jsonl(args.qa)[: args.questions])
    cfg = AgentConfig(max_turns=args.max_turns, max_tokens_per_turn=args.max_tokens_per_turn,
                      max_response_tokens=args.max_response_tokens, prethink=args.prethink)
    with serve_in_background(args.corpus, args.index, "bundled:minilm") as url:
        search = make_search_fn(url, 3)
        rows = []
        for name, gen in [("greedy", HFGenerator(model, tok, greedy=True)),
                          ("sampled", HFGenerator(model, tok, temperature=1.0, top_p=1.0))]:
            t0 = time.perf_counter()
            trajs = rollout(questions, tok, cfg, gen, search, group_size=args.group_size)
            dt = time.perf_counter() - t0
            n_gen = sum(sum(t.loss_mask) for t in trajs)
            rows.append((name, len(trajs), n_gen, dt, n_gen / dt))
        base = rows[0][4]
        print(f"{'decode':8s} {'rollouts':>8s} {'gen tok':>8s} {'s':>7s} {'tok/s':>8s} {'vs greedy':>9s}")
        for name, n, g, dt, tps in rows:
            print(f"{name:8s} {n:8d} {g:8d} {dt:7.2f} {tps:8.1f} {tps / base:9.2f}x")

        # one RL step on the sampled rollouts (rollout time measured above)
        t0 = time.perf_counter()
        with torch.no_grad():
            old, _, _ = response_logprobs(model, trajs, tok.pad_token_id)
        t_old = time.perf_counter() - t0
        _, _, mask, _ = pad_batch(trajs, tok.pad_token_id)
        adv = torch.randn(len(trajs), 1) * mask
        acfg = actor_config(0.2, {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        t0 = time.perf_counter()
        lp, _, m = response_logprobs(model, trajs, tok.pad_token_id)
        loss, _ = policy_loss(acfg, old, lp, adv, m, int(m.sum()), len(trajs))
        loss.backward()
        opt.step()
        t_upd = time.perf_counter() - t0
        print(f"RL step: rollout {rows[1][3]:.2f}s + old log-prob {t_old:.2f}s + update "
              f"{t_upd:.2f}s = {rows[1][3] + t_old + t_upd:.2f}s "
              f"({args.questions} questions x G={args.group_size})")


if __name__ == "__main__":
    main()
