"""The ``calibadv`` command: one subcommand per workflow step.

Subcommands live in ``calibadv/commands/<name>.py``; each module defines
``register(subparsers)`` that adds its parser and sets ``func`` on it. Discovery is automatic,
so adding a step never means editing this file. Heavy imports belong inside the ``func`` of a
command, not at module level, so ``calibadv --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from calibadv import __version__, commands
from calibadv.errors import CalibAdvError
from calibadv.workflow.job_inputs import check_job_inputs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibadv",
        description=(
            "CalibAdv reproduction pipeline. Every Snakemake rule calls one of these "
            "subcommands; run them by hand to debug a single step."
        ),
    )
    parser.add_argument("--version", action="version", version=f"calibadv {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:  # per-request HTTP lines, uvicorn's life cycle of an in-process
        # retrieval server and FAISS's CPU-feature probing are noise below -vv
        for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "uvicorn.error", "faiss.loader"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not sys.stderr.isatty():  # HF's own bars ("Loading weights") redraw with \r in logs
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_job_inputs(args)  # a missing input (or, offline, model dir) fails here, before torch
        result = args.func(args)
    except CalibAdvError as err:
        print(f"calibadv {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
