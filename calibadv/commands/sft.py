"""``calibadv sft``: supervised warm start on gold-hop demonstrations."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from calibadv.retrieval.client import make_search_fn
    from calibadv.io import read_jsonl
    from calibadv.retrieval.launch import serve
    from calibadv.train.sft import SFTConfig, run_sft

    check_args(args)
    cfg = SFTConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    limit=args.limit, seed=args.seed, prethink=args.prethink, topk=args.topk,
                    hop_epochs=args.hop_epochs, obs_loss_weight=args.obs_loss_weight,
                    quote_evidence=args.quote_evidence)
    eval_rows = read_jsonl(args.eval_qa)[: args.eval_limit] if args.eval_qa else []
    agent = {"max_turns": args.max_turns, "max_tokens_per_turn": args.max_tokens_per_turn,
             "max_response_tokens": args.max_response_tokens}
    if args.retrieval_url:
        search = make_search_fn(args.retrieval_url, args.topk)
        report = run_sft(args.model, args.qa, search, args.out, cfg, eval_rows, agent)
    else:
        with serve(args.server, args.corpus, args.index, args.encoder,
                   reranker=args.reranker) as url:
            search = make_search_fn(url, args.topk)
            report = run_sft(args.model, args.qa, search, args.out, cfg, eval_rows, agent)
    summary = {k: report.get(k) for k in ("demonstrations", "optimizer_steps", "loss_last")}
    print(f"wrote {args.out}: {summary}")
    for name, point in report.get("start_point", {}).items():
        print(f"start point ({name} prompts, {point['eval_n']} questions, greedy): format rate "
              f"{point['format_rate']:.2f}, F1 {point['f1']:.3f}, EM {point['em']:.3f}")
    return 0


def _flag(value: str) -> bool:
    """``true``/``false`` (any case; also 1/0, yes/no), as config booleans reach the command."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="SFT warm start from the synthetic world's gold hops",
        description=(
            "Builds demonstrations from QA rows with metadata.hops through the real retriever "
            "(one search per gold hop, the retrieved passages as observations, the golden "
            "answer), fine-tunes on generated tokens only and writes an HF directory OUT with "
            "OUT/sft_report.json: the start point's format rate and F1 on --eval-qa, measured "
            "with plain and with PreThink prompts (one plain-format SFT model serves both; "
            "--prethink trains on PreThink demonstrations instead)."
        ),
    )
    p.add_argument("--model", required=True, help="HF directory of the model to fine-tune")
    p.add_argument("--qa", required=True, help="QA JSONL with metadata.hops (synth train.jsonl)")
    p.add_argument("--corpus", help="corpus JSONL (to start a retrieval server)")
    p.add_argument("--index", help="FAISS index (to start a retrieval server)")
    p.add_argument("--encoder", default="bundled:minilm", help="query encoder of the index")
    p.add_argument("--reranker", default=None, help="cross-encoder for the server (optional)")
    p.add_argument("--retrieval-url", default=None, help="use this running server instead")
    p.add_argument("--server", choices=["process", "thread"], default="process",
                   help="start the server as a child process (default) or in a thread of this "
                   "process (one Python start-up fewer; small CPU runs)")
    p.add_argument("--out", required=True, help="output HF directory")
    p.add_argument("--prethink", action="store_true", help="PreThink variant (think in prompt)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the demonstrations")
    p.add_argument("--hop-epochs", type=float, default=0.0,
                   help="curriculum: passes over single-hop demonstrations (one per gold hop, "
                   "the hop's sub-query as the question) before the multi-hop ones (default 0)")
    p.add_argument("--obs-loss-weight", type=float, default=0.0,
                   help="weight of a language-model loss on observation tokens (default 0: "
                   "generated tokens only); teaches a tiny model to copy names from passages")
    p.add_argument("--quote-evidence", nargs="?", const=True, default=False, type=_flag,
                   help="open each turn after a search by quoting the retrieved sentence that "
                   "states the hop's answer (true/false; default false); teaches a tiny model "
                   "to read by copying")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="use the first N QA rows only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topk", type=int, default=3, help="passages per search")
    p.add_argument("--eval-qa", default=None, help="QA JSONL to measure the start point on")
    p.add_argument("--eval-limit", type=int, default=100, help="questions of --eval-qa used")
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-tokens-per-turn", type=int, default=64)
    p.add_argument("--max-response-tokens", type=int, default=1024)
    p.set_defaults(func=_run)


def check_args(args: argparse.Namespace) -> None:
    """Either a server URL or corpus+index must be given."""
    if not args.retrieval_url and not (args.corpus and args.index):
        from calibadv.errors import ConfigError

        raise ConfigError("give --retrieval-url, or --corpus and --index to start a server")
