"""``calibadv spec``: write the RunSpec YAML of one (model, method, seed) run.

The workflow's `spec` rule passes the already-resolved spec as JSON (so `--config` overrides
on the Snakemake command line carry through); by hand, name a workflow config, a model and a
method and the same resolution runs here.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "spec",
        help="write the RunSpec YAML of one training run",
        description=(
            "Write OUT: the RunSpec (see calibadv/spec.py) that `calibadv train --spec` reads. "
            "Either --json SPEC (a resolved spec, as the workflow passes it) or --config "
            "WORKFLOW_CONFIG --model M --method X (resolved here from the workflow config, "
            "config/methods.yaml and the config's own method presets). Unknown keys and "
            "wrong types are rejected with the dotted key named."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="the resolved RunSpec as a JSON string")
    src.add_argument("--config", help="a workflow config YAML (e.g. config/tiny.yaml)")
    p.add_argument("--model", help="model key of the workflow config (with --config)")
    p.add_argument("--method", help="method name (with --config)")
    p.add_argument(
        "--seed", type=int,
        help="RL seed of the run (with --config): one of the config's `seeds` (default: the first)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="RunSpec YAML to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from calibadv.errors import ConfigError
    from calibadv.io import atomic_write_text
    from calibadv.spec import dump_run_spec, run_spec_from_dict

    if args.json is not None:
        try:
            data = json.loads(args.json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--json: not valid JSON ({err.msg} at char {err.pos})") from None
    else:
        from calibadv.workflow.run_specs import run_spec_dict
        from calibadv.workflow.validation import load_config

        if not args.model or not args.method:
            raise ConfigError("--config needs --model and --method (e.g. --model tiny --method calibadv)")
        config = load_config(args.config)
        data = run_spec_dict(config, args.model, args.method, args.seed)
    spec = run_spec_from_dict(data)
    atomic_write_text(args.out, dump_run_spec(spec))
    print(f"wrote RunSpec {spec.name or '(unnamed)'} to {args.out}")
    return 0
