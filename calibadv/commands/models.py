"""``calibadv build-tiny-model`` and ``calibadv download-model``: the policy's HF directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from calibadv.models.tiny import TinyConfig  # a dataclass module: no torch

    p = subparsers.add_parser(
        "build-tiny-model",
        help="train a BPE tokenizer and initialise a tiny Qwen2 model",
        description=(
            "Train a byte-level BPE tokenizer on the corpus and QA files (with the agent tags as "
            "single tokens and a Qwen chat template) and initialise a small Qwen2ForCausalLM. "
            "Writes an HF directory OUT (tokenizer, config, model.safetensors, tiny_model.json)."
        ),
    )
    p.add_argument("--corpus", required=True, help="wiki-18 corpus JSONL")
    p.add_argument("--qa", nargs="+", required=True, help="QA JSONL file(s)")
    p.add_argument("--out", required=True, help="output HF model directory")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    d = TinyConfig()  # one set of defaults: the dataclass's
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--hidden-size", type=int, default=d.hidden_size)
    p.add_argument("--layers", type=int, default=d.num_hidden_layers)
    p.add_argument("--heads", type=int, default=d.num_attention_heads,
                   help="attention heads (hidden size / heads is the head dimension; "
                        f"default {d.num_attention_heads})")
    p.add_argument("--kv-heads", type=int, default=d.num_key_value_heads,
                   help="key/value heads (grouped-query attention; must divide --heads)")
    p.add_argument("--intermediate-size", type=int, default=d.intermediate_size,
                   help="MLP width")
    p.set_defaults(func=run_build)

    d = subparsers.add_parser(
        "download-model",
        help="download a model snapshot from the HF hub",
        description=("Download REPO_ID from the Hugging Face hub (weights, config, tokenizer) "
                     "into OUT, pinned to one commit: resumable (a killed download continues "
                     "from .OUT.download/), every file checked against the size and hash the hub "
                     "reports, one progress line per file; OUT appears only when complete. A "
                     "local directory as REPO_ID is copied instead; with HF_HUB_OFFLINE=1 the "
                     "hub cache is copied."),
    )
    d.add_argument("--repo-id", required=True, help="hub id (e.g. Qwen/Qwen2.5-3B) or a folder")
    d.add_argument("--out", required=True, help="output directory")
    d.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    d.add_argument("--verify", choices=["hash", "size"], default="hash",
                   help="check each file against the hub: size and sha256/git hash (default) "
                        "or size only")
    d.set_defaults(func=run_download)


def run_build(args: argparse.Namespace) -> int:
    from calibadv.errors import ConfigError
    from calibadv.models.tiny import TinyConfig, build_tiny_model

    for flag, value in [("--vocab-size", args.vocab_size), ("--hidden-size", args.hidden_size),
                        ("--layers", args.layers), ("--heads", args.heads),
                        ("--kv-heads", args.kv_heads),
                        ("--intermediate-size", args.intermediate_size)]:
        if value <= 0:
            raise ConfigError(f"{flag} must be positive, got {value}")
    if args.hidden_size % args.heads:
        raise ConfigError(f"--hidden-size must be a multiple of --heads ({args.heads}), "
                          f"got {args.hidden_size}")
    if args.heads % args.kv_heads:
        raise ConfigError(f"--kv-heads ({args.kv_heads}) must divide --heads ({args.heads})")
    config = TinyConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.kv_heads,
                        intermediate_size=args.intermediate_size, seed=args.seed)
    info = build_tiny_model(args.corpus, args.qa, args.out, config)
    print(f"wrote {args.out}: {info['parameters']:,} parameters, vocab {info['vocab_size']}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from calibadv.models.hub import download_model

    print(download_model(args.repo_id, args.out, revision=args.revision, verify=args.verify))
    return 0
