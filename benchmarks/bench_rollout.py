"""Rollout throughput of the local engines on the tiny model (CPU), side by side in one process.

Usage (after a tiny world, model, index and SFT start point exist):

    python benchmarks/bench_rollout.py --model results/synthetic/models/tiny/sft \
        --corpus results/synthetic/world/corpus.jsonl --index results/synthetic/index/index.faiss \
        --qa results/synthetic/world/train.jsonl --questions 8 --group-size 4

Runs the same multi-turn rollouts (same model, questions, protocol limits and retrieval server)
through each engine, interleaved ``--repeats`` times after ``--warmup`` untimed rounds (which
fill the search memo with every engine's queries: each engine's rollouts repeat under the
same seed, so timed rounds never wait on a first answer from the server), and prints the
median generated tokens/s with its ratio to the reference ``HFGenerator`` (``model.generate``)
under sampling, plus where
each engine's wall time went (generation vs retrieval between turns). Greedy rows also report
whether the engines produced the same tokens. Then one RL step on the kv-sampled rollouts as
the local trainer runs it (rollout / old log-prob / update), with the LM head at every
position (before), at the generated positions only, and with the first mini-batch's old
log-probs taken from its own loss forward (the trainer today), side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")


class Timed:
    """Wraps a GenerateFn/SearchFn and adds up the seconds spent inside it."""

    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn, self.seconds = fn, 0.0

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return self.fn(batch)
        finally:
            self.seconds += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--qa", required=True)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--max-tokens-per-turn", type=int, default=48)
    ap.add_argument("--max-response-tokens", type=int, default=400)
    ap.add_argument("--topk", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    ap.add_argument("--top-p", type=float, default=1.0,
                    help="nucleus cut of the sampled engines (training.top_p; the tiny config's 0.95)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed rounds first: every engine's queries reach the search memo, "
                         "so no timed round waits on the retrieval server's first answers")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--prethink", action="store_true")
    ap.add_argument("--mini-batch-size", type=int, default=4, help="questions per AdamW step")
    ap.add_argument("--micro-batch-size", type=int, default=16, help="rollouts per forward")
    ap.add_argument("--update-repeats", type=int, default=3,
                    help="interleaved RL-step rounds (0: rollouts only)")
    args = ap.parse_args()

    import torch

    from calibadv.agent.hf import HFGenerator
    from calibadv.agent.kvcache import KVCacheGenerator
    from calibadv.models.policy import load_policy
    from calibadv.retrieval.client import make_search_fn
    from calibadv.agent.rollouts import rollout
    from calibadv.agent.types import AgentConfig
    from calibadv.io import read_jsonl
    from calibadv.retrieval.launch import serve_in_thread
    from calibadv.train.sft import memo_search, qa_questions

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_policy(args.model)
    questions = qa_questions(read_jsonl(args.qa)[: args.questions])
    cfg = AgentConfig(max_turns=args.max_turns, max_tokens_per_turn=args.max_tokens_per_turn,
                      max_response_tokens=args.max_response_tokens, prethink=args.prethink)
    engines = {
        "hf sampled": lambda: HFGenerator(model, tok, temperature=args.temperature, top_p=args.top_p),
        "kv sampled": lambda: KVCacheGenerator(model, tok, temperature=args.temperature,
                                               top_p=args.top_p),
        "kv sampled, no reuse": lambda: KVCacheGenerator(model, tok, temperature=args.temperature,
                                                         top_p=args.top_p, reuse_prefix=False),
        "hf greedy": lambda: HFGenerator(model, tok, greedy=True),
        "kv greedy": lambda: KVCacheGenerator(model, tok, greedy=True),
    }
    with serve_in_thread(args.corpus, args.index, "bundled:minilm") as url:
        search = memo_search(make_search_fn(url, args.topk))  # same answers, warm for all
        runs: dict[str, list[tuple[float, float, float, int, int]]] = {k: [] for k in engines}
        outputs: dict[str, list] = {}
        for rnd in range(args.warmup + args.repeats):
            for name, make in engines.items():
                gen, srch = Timed(make()), Timed(search)
                torch.manual_seed(0)
                t0, c0 = time.perf_counter(), time.thread_time()
                trajs = rollout(questions, tok, cfg, gen, srch, group_size=args.group_size)
                dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
                n_gen = sum(sum(t.loss_mask) for t in trajs)
                if rnd >= args.warmup:
                    runs[name].append((dt, gen.seconds, srch.seconds, n_gen, len(trajs), cpu))
                outputs[name] = trajs
        base = statistics.median(r[3] / r[0] for r in runs["hf sampled"])
        base_cpu = statistics.median(r[3] / r[5] for r in runs["hf sampled"])
        print(f"{len(questions)} questions x G={args.group_size}, {args.max_turns} searches x "
              f"{args.max_tokens_per_turn} tokens, T={args.temperature}, top-p {args.top_p}, "
              f"torch threads {torch.get_num_threads()}, "
              f"median of {args.repeats} interleaved rounds after {args.warmup} untimed")
        # wall clock, and the main thread's CPU time (what a loaded, shared machine disturbs less:
        # one torch thread runs every engine's arithmetic in the calling thread)
        print(f"{'engine':22s} {'rollouts':>8s} {'gen tok':>8s} {'s':>7s} {'generate':>8s} "
              f"{'search':>7s} {'tok/s':>8s} {'vs hf sampled':>13s} {'cpu s':>6s} "
              f"{'cpu tok/s':>9s} {'vs hf':>6s}")
        for name, rs in runs.items():
            tps = statistics.median(r[3] / r[0] for r in rs)
            cps = statistics.median(r[3] / r[5] for r in rs)
            med = sorted(rs, key=lambda r: r[3] / r[0])[len(rs) // 2]
            print(f"{name:22s} {med[4]:8d} {med[3]:8d} {med[0]:7.2f} {med[1]:8.2f} "
                  f"{med[2]:7.2f} {tps:8.1f} {tps / base:12.2f}x {med[5]:6.2f} {cps:9.1f} "
                  f"{cps / base_cpu:5.2f}x")
        same = [a.response_ids == b.response_ids
                for a, b in zip(outputs["hf greedy"], outputs["kv greedy"], strict=True)]
        print(f"greedy rollouts identical between hf and kv: {sum(same)}/{len(same)}")

        # one RL step on the kv-sampled rollouts (rollout time measured above), as the local
        # trainer runs it: old log-probs (+ entropy) per micro-batch, then one AdamW step per
        # mini-batch of whole questions; the LM head at every position (before) against the
        # generated positions only (after), interleaved
        if args.update_repeats <= 0:
            return
        trajs = outputs["kv sampled"]
        t_roll = statistics.median(r[0] for r in runs["kv sampled"])
        steps: dict[str, list[tuple[float, float]]] = {"full": [], "positions": [], "reuse": []}
        for _ in range(args.update_repeats):
            for name in steps:
                steps[name].append(rl_step(model, trajs, tok.pad_token_id, args, name == "full",
                                           reuse_first=name == "reuse"))
        print(f"RL step on the kv-sampled rollouts ({len(trajs)} rollouts, mini-batch "
              f"{args.mini_batch_size} questions, micro-batch {args.micro_batch_size}), "
              f"median of {args.update_repeats}:")
        before = [statistics.median(x[j] for x in steps["full"]) for j in (0, 1)]
        for name, label in (("full", "LM head at every position"),
                            ("positions", "LM head at generated positions"),
                            ("reuse", "+ 1st mini-batch old from loss")):
            old, upd = (statistics.median(x[j] for x in steps[name]) for j in (0, 1))
            total = t_roll + old + upd
            print(f"  {label:31s}: rollout {t_roll:.2f}s + old log-prob {old:.2f}s "
                  f"({before[0] / old:.2f}x) + update {upd:.2f}s ({before[1] / upd:.2f}x) = "
                  f"{total:.2f}s ({(t_roll + sum(before)) / total:.2f}x)")


def rl_step(model, trajs, pad_id, args, full, reuse_first=False):  # type: ignore[no-untyped-def]
    """(old log-prob seconds, update seconds) of one local-trainer step on ``trajs``;
    ``reuse_first``: the first mini-batch's old log-probs come from its own loss forward
    (detached), as the local trainer does for a model without dropout."""
    import torch

    from calibadv.train.policy import actor_config, pad_batch, policy_loss, response_logprobs

    B, micro = len(trajs), args.micro_batch_size
    mb_size = args.mini_batch_size * args.group_size
    chunks = [(i, min(m0 + mb_size, B, i + micro)) for m0 in range(0, B, mb_size)
              for i in range(m0, min(B, m0 + mb_size), micro)]
    t0 = time.perf_counter()
    with torch.no_grad():
        old = {i: response_logprobs(model, trajs[i:j], pad_id, args.temperature,
                                    with_entropy=True, all_positions=full)[0]
               for i, j in chunks if not (reuse_first and i < mb_size)}
    t_old = time.perf_counter() - t0
    _, _, mask, _ = pad_batch(trajs, pad_id)
    adv = torch.randn(B, 1) * mask
    acfg = actor_config(0.2, {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    t0 = time.perf_counter()
    for m0 in range(0, B, mb_size):
        opt.zero_grad(set_to_none=True)
        n_tok = int(mask[m0 : m0 + mb_size].sum())
        for i, j in chunks:
            if m0 <= i < m0 + mb_size:
                lp, _, m = response_logprobs(model, trajs[i:j], pad_id, args.temperature,
                                             with_entropy=i not in old, all_positions=full,
                                             entropy_grad=False)
                old.setdefault(i, lp.detach())
                w = m.shape[1]
                loss, _ = policy_loss(acfg, old[i][:, :w], lp, adv[i:j, :w], m, max(n_tok, 1),
                                      j - i)
                loss.backward()
        opt.step()
    return t_old, time.perf_counter() - t0

if __name__ == "__main__":
    main()
