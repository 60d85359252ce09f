"""Benchmark evaluation: greedy rollouts over every question of a split.

No ``drop_last``: every question of the Parquet (or the first ``limit``) is answered and
scored, in batches, so a benchmark whose size is not a multiple of the batch loses nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_json, atomic_write_jsonl
from calibadv.spec import RunSpec

GENERATORS = ("hf", "kv", "vllm")


def checkpoint_step(checkpoint: Path) -> int | None:
    """The training step a checkpoint directory holds (``checkpoint.json``), if recorded."""
    meta = checkpoint / "checkpoint.json"
    if meta.exists():
        return int(json.loads(meta.read_text())["step"])
    return None


def make_generator(kind: str, checkpoint: Path, spec: RunSpec):
    """(generate_fn, tokenizer) for greedy decoding with the chosen engine."""
    if kind in ("hf", "kv"):  # in-process engines: calibadv.agent.engines
        from calibadv.agent.engines import local_generator
        from calibadv.models.policy import load_policy

        model, tok = load_policy(checkpoint, spec.model.dtype)
        if spec.model.chat_template:
            tok.chat_template = spec.model.chat_template
        return local_generator(kind, model, tok, greedy=True), tok
    if kind == "vllm":
        from transformers import AutoTokenizer

        from calibadv.agent.vllm import VLLMGenerator

        gen = VLLMGenerator(str(checkpoint), temperature=0.0, seed=spec.seed)
        tok = AutoTokenizer.from_pretrained(checkpoint)
        if spec.model.chat_template:
            tok.chat_template = spec.model.chat_template
        return gen, tok
    raise CalibAdvError(f"--generator: {kind!r} is not one of {', '.join(GENERATORS)}")


def evaluate(
    spec: RunSpec,
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    benchmark: str,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    generator: str = "hf",
    batch_size: int = 64,
    search_fn: Any = None,
) -> dict[str, Any]:
    """Write ``predictions.jsonl`` and ``metrics.json`` (docs/design.md) and return the metrics."""
    return evaluate_suites(spec, checkpoint, {benchmark: (data, out_dir)}, limit=limit,
                           generator=generator, batch_size=batch_size, search_fn=search_fn)[0]


def evaluate_suites(
    spec: RunSpec,
    checkpoint: str | os.PathLike,
    suites: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
    limit: int | None = None,
    generator: str = "hf",
    batch_size: int = 64,
    search_fn: Any = None,
) -> list[dict[str, Any]]:
    """Evaluate one checkpoint on several benchmarks, ``{name: (parquet, out_dir)}``.

    The model and the retrieval server are loaded once for all of them: on a CPU the start-up
    (imports, server, model) costs more than a small benchmark's rollouts. Each benchmark's
    files are written as soon as it is done, exactly as a single-benchmark run writes them.
    """
    from calibadv.retrieval.client import make_search_fn
    from calibadv.retrieval.launch import retrieval_url

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CalibAdvError(f"--checkpoint {checkpoint} is not a model directory")
    if not suites:
        raise CalibAdvError("no benchmark to evaluate")
    loaded = {name: _questions(data, limit) for name, (data, _) in suites.items()}
    generate_fn, tok = make_generator(generator, checkpoint, spec)

    def run_all(search: Any) -> list[dict[str, Any]]:
        return [
            _evaluate_one(spec, checkpoint, name, loaded[name], Path(out), generate_fn, tok,
                          search, batch_size)
            for name, (_, out) in suites.items()
        ]

    if search_fn is not None:
        return run_all(search_fn)
    with retrieval_url(spec.retrieval) as url:
        return run_all(make_search_fn(url, spec.retrieval.topk))


def _questions(data: str | os.PathLike, limit: int | None) -> list:
    from calibadv.data.questions import load_questions

    questions = load_questions(data, limit)
    if not questions:
        raise CalibAdvError(f"--data {data}: no questions to evaluate")
    return questions


def _evaluate_one(
    spec: RunSpec,
    checkpoint: Path,
    benchmark: str,
    questions: list,
    out_dir: Path,
    generate_fn: Any,
    tok: Any,
    search: Any,
    batch_size: int,
) -> dict[str, Any]:
    from calibadv.agent.rollouts import agent_config, method_flags, rollout, score
    from calibadv.evaluate.metrics import rollout_ppl, summarise

    prethink, require_search = method_flags(spec.method)
    cfg = agent_config(spec, prethink)
    trajs = []
    from calibadv.progress import progress

    bar = progress(total=len(questions), desc=f"evaluate {benchmark}")
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        trajs += rollout(chunk, tok, cfg, generate_fn, search)
        bar.update(len(chunk))
    bar.close()
    for tr, q in zip(trajs, questions, strict=True):
        score(tr, q, prethink, require_search)
    preds = [
        {"id": q.id, "question": q.question, "golden_answers": q.golden_answers,
         "prediction": tr.answer, "f1": tr.reward, "em": tr.em if tr.format_ok else 0.0,
         "format_ok": tr.format_ok, "num_searches": tr.num_searches, "ppl": rollout_ppl(tr)}
        for tr, q in zip(trajs, questions, strict=True)
    ]
    s = summarise(trajs)
    metrics = {
        "model": spec.model.name or Path(spec.model.path).name,
        "method": spec.method.get("name") or spec.name,
        "benchmark": benchmark,
        "n": len(trajs),
        "f1": s["f1"],
        "em": s["em"],
        "format_rate": s["format_rate"],
        "high_ppl_ratio": s["high_ppl_ratio"],
        "mean_searches": s["mean_searches"],
        "checkpoint": str(checkpoint),
        "step": checkpoint_step(checkpoint),
    }
    atomic_write_jsonl(out_dir / "predictions.jsonl", preds)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
