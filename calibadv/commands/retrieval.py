"""Retrieval commands: ``index encode``, ``index merge``, ``serve``, ``download-corpus``,
``download-index``."""

from __future__ import annotations

import argparse
from typing import Any


def _encode(args: argparse.Namespace) -> int:
    from calibadv.retrieval.corpus import Corpus
    from calibadv.retrieval.encoder import Encoder
    from calibadv.retrieval.index import encode_shard

    corpus = Corpus(args.corpus)
    overrides: dict[str, Any] = {}
    if args.passage_prefix is not None:
        overrides["passage_prefix"] = args.passage_prefix
    if args.max_length is not None:
        overrides["max_length"] = args.max_length
    encoder = Encoder(
        args.encoder, device=args.device, batch_size=args.batch_size, **overrides
    )
    encode_shard(
        corpus,
        encoder,
        args.shard,
        args.num_shards,
        args.out,
        chunk_size=args.chunk_size,
    )
    return 0


def _merge(args: argparse.Namespace) -> int:
    from calibadv.retrieval.index import merge_shards

    merge_shards(args.shards, args.out, kind=args.kind, hnsw_m=args.hnsw_m)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from calibadv.retrieval.server import run_server
    from calibadv.retrieval.server_config import ServerOptions, server_parts

    load, cfg = server_parts(ServerOptions.from_args(args))
    return run_server(
        load, cfg, host=args.host, port=args.port, port_file=args.port_file
    )


def _download_corpus(args: argparse.Namespace) -> int:
    from calibadv.retrieval.download import download_corpus

    download_corpus(
        args.out,
        repo_id=args.repo_id,
        filename=args.filename,
        revision=args.revision,
        cache_dir=args.cache_dir,
        verify=args.verify,
    )
    return 0


def _download_index(args: argparse.Namespace) -> int:
    from calibadv.retrieval.download import download_index

    download_index(
        args.out,
        repo_id=args.repo_id,
        parts=args.parts,
        revision=args.revision,
        cache_dir=args.cache_dir,
        verify=args.verify,
    )
    return 0


def _verify_flag(parser: argparse.ArgumentParser) -> None:
    from calibadv.downloads import VERIFY_MODES

    parser.add_argument(
        "--verify", choices=VERIFY_MODES, default="hash",
        help="check each file against the hub: size and sha256 (hash, default) or size only",
    )  # fmt: skip


def register(sub: Any) -> None:
    from calibadv.retrieval.server_config import add_serve_arguments
    from calibadv.retrieval.download import (
        CORPUS_FILE,
        CORPUS_REPO,
        INDEX_PARTS,
        INDEX_REPO,
    )

    idx = sub.add_parser(
        "index", help="build a dense index: encode shards, merge into FAISS"
    )
    isub = idx.add_subparsers(dest="index_command", metavar="STEP", required=True)

    enc = isub.add_parser(
        "encode",
        help="encode one shard of a corpus",
        description="Reads a corpus JSONL; writes OUT (.npy, float32, one row per passage of the "
        "shard) and OUT.json. Resumable: finished chunks in OUT.parts/ are kept after a kill.",
    )
    enc.add_argument("--corpus", required=True, help="corpus JSONL ({id, contents})")
    enc.add_argument(
        "--encoder", required=True, help="model dir, hub id or bundled:minilm"
    )
    enc.add_argument(
        "--shard", type=int, default=0, help="this shard's number (0-based)"
    )
    enc.add_argument("--num-shards", type=int, default=1, help="number of shards")
    enc.add_argument("--out", required=True, help="output .npy")
    enc.add_argument(
        "--chunk-size", type=int, default=4096, help="passages per resumable chunk"
    )
    enc.add_argument("--batch-size", type=int, default=None,
                     help="passages per forward pass (default: 32 on CPU, 256 on GPU; "
                     "measured in docs/retrieval.md)")
    enc.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: GPU if any)"
    )
    enc.add_argument(
        "--passage-prefix", default=None, help="override the model's passage prefix"
    )
    enc.add_argument(
        "--max-length", type=int, default=None, help="override max tokens (256)"
    )
    enc.set_defaults(func=_encode)

    mrg = isub.add_parser(
        "merge",
        help="merge encoded shards into a FAISS index",
        description="Reads shard .npy files (+ their .json) and writes a FAISS index file.",
    )
    mrg.add_argument("--shards", nargs="+", required=True, help="shard .npy files")
    mrg.add_argument("--out", required=True, help="output FAISS index file")
    mrg.add_argument(
        "--kind",
        default="flat",
        choices=["flat", "hnsw"],
        help="flat = exact inner product (paper); hnsw = approximate, CPU-friendly",
    )
    mrg.add_argument("--hnsw-m", type=int, default=64, help="HNSW graph degree")
    mrg.set_defaults(func=_merge)

    srv = sub.add_parser(
        "serve",
        help="HTTP retrieval server (Search-R1 compatible /retrieve)",
        description="Reads a corpus JSONL, a FAISS index and encoder/reranker models; serves "
        "POST /retrieve and GET /health (503 until loaded). Binds 127.0.0.1 unless --host.",
    )
    add_serve_arguments(srv)
    srv.set_defaults(func=_serve)

    dc = sub.add_parser(
        "download-corpus",
        help="download the wiki-18 corpus (JSONL) from the HF hub",
        description=f"Downloads {CORPUS_REPO}/{CORPUS_FILE} (dataset repo) and writes the "
        "decompressed JSONL to --out. Resumable (OUT's folder keeps .OUT.download/ until done), "
        "verified against the hub's size and hash, one progress line per file. With "
        "HF_HUB_OFFLINE=1 the file is read from the hub cache instead.",
    )
    dc.add_argument("--out", required=True, help="output JSONL")
    dc.add_argument("--repo-id", default=CORPUS_REPO)
    dc.add_argument("--filename", default=CORPUS_FILE)
    dc.add_argument("--revision", default=None, help="pin a hub revision")
    dc.add_argument("--cache-dir", default=None, help="hub cache folder (offline use)")
    _verify_flag(dc)
    dc.set_defaults(func=_download_corpus)

    di = sub.add_parser(
        "download-index",
        help="download the prebuilt e5 flat index of wiki-18 from the HF hub",
        description=f"Downloads {', '.join(INDEX_PARTS)} of {INDEX_REPO} (dataset repo) and "
        "joins them into --out (a FAISS IndexFlatIP, ~64 GB; the parts are deleted once joined). "
        "Resumable, verified against the hub's sizes and hashes, one progress line per file.",
    )
    di.add_argument("--out", required=True, help="output FAISS index file")
    di.add_argument("--repo-id", default=INDEX_REPO)
    di.add_argument(
        "--parts", nargs="+", default=list(INDEX_PARTS), help="part files, in order"
    )
    di.add_argument("--revision", default=None, help="pin a hub revision")
    di.add_argument("--cache-dir", default=None, help="hub cache folder (offline use)")
    _verify_flag(di)
    di.set_defaults(func=_download_index)
