"""SFT warm start: teach a (tiny) policy the Search-R1 format from the world's gold hops.

A demonstration follows the question's gold hops through the *real* retriever: one search per
hop with the hop's natural sub-query, the observation is whatever the retriever returns (a
miss is kept: the demonstration still answers with the golden answer), the think text is a
short template, and the last turn answers. Only generated tokens are trained on; observation
tokens (and with PreThink the ``<think>`` that closes each observation) are masked, exactly
as in RL. The goal is an RL start point that is format-valid most of the time and right only
sometimes, so that GRPO groups see mixed rewards.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibadv.agent.protocol import format_observation
from calibadv.agent.types import SearchFn
from calibadv.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    epochs: float = 3.0
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    limit: int | None = None  # demonstrations used (None = every QA row)
    seed: int = 0
    prethink: bool = False
    topk: int = 3
    # Curriculum: passes over single-hop demonstrations (one per gold hop of every QA row,
    # the hop's sub-query as the question) trained *before* the multi-hop ones.
    hop_epochs: float = 0.0
    # Weight of a language-model loss on observation tokens (0 = generated tokens only, as RL).
    # Passages repeat their title in the text ("Doc 1(Title: X) X was born in ..."), so this
    # trains the copying of names that the policy then needs to carry a name into its next
    # search and its answer (docs/training.md, "The start point").
    obs_loss_weight: float = 0.0
    # Open each turn after a search by quoting the retrieved sentence that states the hop's
    # answer ("Baileth Krokern was a sculptor."), when the search found it. The quote turns
    # reading into copying a continuation the model has just written the start of (an
    # induction pattern a 2-layer model learns), and puts the name the next search or the
    # answer needs a few tokens back (docs/training.md, "The start point").
    quote_evidence: bool = False


@dataclass
class Demo:
    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]


def think_text(hop: int, n_hops: int, sub_question: str, evidence: str | None = None) -> str:
    """The templated reasoning of one turn, opened by the quoted evidence of the last search."""
    lead = f"{evidence} " if evidence else ""
    if hop == 0:
        return f"{lead}I need to find out: {sub_question}"
    if hop < n_hops:
        return f"{lead}Next I need to find out: {sub_question}"
    return f"{lead}I have enough information to answer."


_SENTENCE_END = re.compile(r"(?<=\.)\s+")


def evidence_sentence(passages: Sequence[Any], gold_ids: Sequence[str], answer: str) -> str | None:
    """The first sentence of a retrieved gold passage that contains the hop's answer, or None
    when the search missed every gold passage (the demonstration then quotes nothing rather
    than a fact that is not in front of the model)."""
    gold = {str(g) for g in gold_ids}
    needle = answer.strip().lower()
    if not needle:
        return None
    for p in passages:
        if gold and str(getattr(p, "id", "")) not in gold:
            continue
        for sentence in _SENTENCE_END.split(str(getattr(p, "text", "")).strip()):
            if needle in sentence.lower():
                return sentence.strip()
    return None


def turn_text(think: str, action: str, first: bool, prethink: bool) -> str:
    """One generated turn; with PreThink the opening ``<think>`` belongs to the prompt/observation."""
    opener = "" if prethink else "<think>"
    del first
    return f"{opener} {think} </think>\n{action}"


def build_demos(
    rows: Sequence[dict[str, Any]], tokenizer: Any, search_fn: SearchFn, prethink: bool,
    quote_evidence: bool = False,
) -> list[Demo]:
    """Demonstrations for QA rows (with ``metadata.hops``), searching hop by hop in batches;
    with ``quote_evidence`` each turn after a search opens with the evidence sentence."""
    from calibadv.data.prompt import build_messages, prompt_ids

    def enc(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    demos = []
    hops_of = []
    evidence: list[str | None] = [None] * len(rows)
    for row in rows:
        hops = (row.get("metadata") or {}).get("hops") or []
        if not hops or not row.get("golden_answers"):
            raise ConfigError(
                f"QA row {row.get('id')!r} has no metadata.hops / golden_answers: SFT needs the "
                "synthetic world's QA files (calibadv synth)"
            )
        hops_of.append([str(h["question"]) for h in hops])
        demos.append(Demo(prompt_ids(tokenizer, build_messages(row["question"]), prethink), [], []))
    max_hops = max(len(h) for h in hops_of)
    for h in range(max_hops):
        todo = [i for i, hops in enumerate(hops_of) if h < len(hops)]
        results = search_fn([hops_of[i][h] for i in todo])
        for i, passages in zip(todo, results, strict=True):
            sub = hops_of[i][h]
            gen = enc(turn_text(think_text(h, len(hops_of[i]), sub, evidence[i]),
                                f"<search> {sub} </search>", h == 0, prethink))
            if quote_evidence:
                hop = rows[i]["metadata"]["hops"][h]
                evidence[i] = evidence_sentence(passages, hop.get("doc_ids") or [],
                                                str(hop.get("answer", "")))
            obs = enc(format_observation(passages, prethink))
            d = demos[i]
            d.response_ids += gen + obs
            d.loss_mask += [1] * len(gen) + [0] * len(obs)
    for i, row in enumerate(rows):
        answer = str(row["golden_answers"][0])
        gen = enc(turn_text(think_text(len(hops_of[i]), len(hops_of[i]), "", evidence[i]),
                            f"<answer> {answer} </answer>", False, prethink))
        demos[i].response_ids += gen
        demos[i].loss_mask += [1] * len(gen)
    return demos


def memo_search(search_fn: SearchFn) -> SearchFn:
    """``search_fn`` that sends each distinct query to the server once."""
    seen: dict[str, Any] = {}

    def search(queries: Sequence[str]) -> list[Any]:
        todo = list(dict.fromkeys(q for q in queries if q not in seen))
        if todo:
            seen.update(zip(todo, search_fn(todo), strict=True))
        return [seen[q] for q in queries]

    return search


def hop_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One single-hop QA row per gold hop: the hop's sub-query asked on its own.

    The curriculum's easy half: read one passage, copy one name. Built from the training rows
    themselves, so no question of another split is seen.
    """
    out = []
    for row in rows:
        for k, hop in enumerate((row.get("metadata") or {}).get("hops") or []):
            out.append({"id": f"{row.get('id')}#hop{k}", "question": str(hop["question"]),
                        "golden_answers": [str(hop["answer"])],
                        "metadata": {"hops": [hop]}})
    return out


def epoch_order(n: int, epochs: float, rng: random.Random) -> list[int]:
    """``epochs`` passes over ``range(n)``, each freshly shuffled; a fraction takes a prefix."""
    order: list[int] = []
    full, frac = divmod(epochs, 1.0)
    for _ in range(int(full)):
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm
    if frac:
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm[: int(frac * n)]
    return order


def sft_train(model: Any, demos: Sequence[Demo], pad_id: int, cfg: SFTConfig,
              progress: bool = True, first: Sequence[Demo] = ()) -> list[float]:
    """Cross-entropy on generated tokens only; returns the loss per optimiser step.

    ``first`` (the curriculum's single-hop demonstrations) is trained for ``cfg.hop_epochs``
    passes before ``cfg.epochs`` passes over ``demos``; one learning-rate schedule spans both.
    """
    import torch

    from calibadv.progress import LineProgress, progress as make_progress

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    order = epoch_order(len(first), cfg.hop_epochs, rng) if first else []
    order += [len(first) + i for i in epoch_order(len(demos), cfg.epochs, rng)]
    demos = [*first, *demos]
    steps = math.ceil(len(order) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup_frac * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    device = next(model.parameters()).device
    model.train()
    losses = []
    bar = make_progress(range(steps), desc="sft") if progress else LineProgress(
        range(steps), disable=True)
    for s in bar:
        batch = [demos[i] for i in order[s * cfg.batch_size : (s + 1) * cfg.batch_size]]
        seqs = [d.prompt_ids + d.response_ids for d in batch]
        width = max(len(x) for x in seqs)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        weights = torch.zeros(ids.shape, dtype=torch.float32)
        for r, (d, seq) in enumerate(zip(batch, seqs, strict=True)):
            ids[r, : len(seq)] = torch.tensor(seq)
            attn[r, : len(seq)] = 1
            p = len(d.prompt_ids)
            gen = torch.tensor(d.loss_mask, dtype=torch.float32)
            labels[r, p : len(seq)] = torch.tensor(d.response_ids)
            weights[r, p : len(seq)] = gen + cfg.obs_loss_weight * (1 - gen)
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device),
                       use_cache=False).logits[:, :-1]
        target, w = labels[:, 1:].to(device), weights[:, 1:].to(device)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                               target.reshape(-1), ignore_index=-100,
                                               reduction="none").view(target.shape)
        loss = (ce * w).sum() / w.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if s % 20 == 0 or s == steps - 1:
            log.info("sft step %d/%d loss %.3f", s + 1, steps, losses[-1])
    model.eval()
    return losses


def qa_questions(rows: Sequence[dict[str, Any]]) -> list:
    """QA JSONL rows → agent questions (for the start-point evaluation)."""
    from calibadv.data.questions import Question
    from calibadv.data.prompt import build_messages

    return [
        Question(id=str(r["id"]), question=r["question"], messages=build_messages(r["question"]),
                 golden_answers=[str(a) for a in r["golden_answers"]], data_source="synthetic",
                 index=i, supporting_ids=list((r.get("metadata") or {}).get("supporting_ids", [])))
        for i, r in enumerate(rows)
    ]


def start_point(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], search_fn: SearchFn,
                prethink: bool, agent_kwargs: dict[str, Any] | None = None,
                generator: str = "kv") -> dict[str, Any]:
    """Greedy rollouts of ``rows`` in one prompt format: the RL start point's format rate and F1."""
    from calibadv.agent.engines import local_generator
    from calibadv.agent.rollouts import rollout, score
    from calibadv.agent.types import AgentConfig
    from calibadv.evaluate.metrics import summarise

    questions = qa_questions(rows)
    agent = AgentConfig(prethink=prethink, **(agent_kwargs or {}))
    trajs = rollout(questions, tokenizer, agent,
                    local_generator(generator, model, tokenizer, greedy=True), search_fn)
    for tr, q in zip(trajs, questions, strict=True):
        score(tr, q, prethink, False)
    s = summarise(trajs)
    return {"eval_n": len(trajs), "format_rate": s["format_rate"], "f1": s["f1"], "em": s["em"],
            "mean_searches": s["mean_searches"], "high_ppl_ratio": s["high_ppl_ratio"],
            "f1_ungated": sum(t.f1 for t in trajs) / len(trajs)}


def run_sft(
    model_dir: str | os.PathLike,
    qa_path: str | os.PathLike,
    search_fn: SearchFn,
    out_dir: str | os.PathLike,
    cfg: SFTConfig,
    eval_rows: Sequence[dict[str, Any]] = (),
    agent_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build demonstrations, fine-tune, save the HF directory, evaluate the start point."""
    import torch

    from calibadv.models.policy import load_policy
    from calibadv.io import atomic_write_json, read_jsonl
    from calibadv.models.tiny import replace_dir

    t0 = time.time()
    torch.manual_seed(cfg.seed)
    model, tok = load_policy(model_dir)
    rows = read_jsonl(qa_path)
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    if not rows:
        raise ConfigError(f"{qa_path}: no QA rows to build demonstrations from")
    search_fn = memo_search(search_fn)  # the curriculum's hop demos repeat the same searches
    demos = build_demos(rows, tok, search_fn, cfg.prethink, cfg.quote_evidence)
    first = (build_demos(hop_rows(rows), tok, search_fn, cfg.prethink, cfg.quote_evidence)
             if cfg.hop_epochs else [])
    losses = sft_train(model, demos, tok.pad_token_id, cfg, first=first)
    report: dict[str, Any] = {
        "config": asdict(cfg), "demonstrations": len(demos), "hop_demonstrations": len(first),
        "demo_tokens_mean": sum(len(d.response_ids) for d in demos) / len(demos),
        "loss_first": losses[0], "loss_last": losses[-1], "optimizer_steps": len(losses),
        "train_s": time.time() - t0,
    }
    if eval_rows:
        # Measured in both prompt formats: under `sft_formats: shared` one start point serves
        # the plain methods and the PreThink ones alike.
        points = {name: start_point(model, tok, eval_rows, search_fn, pt, agent_kwargs)
                  for name, pt in (("plain", False), ("prethink", True))}
        report["start_point"] = points
        report.update(points["prethink" if cfg.prethink else "plain"])
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / "sft_report.json", report)
    replace_dir(tmp, out)
    report["wall_s"] = time.time() - t0
    atomic_write_json(out / "sft_report.json", report)
    return report
