"""GPU check of the verl backend's parts, for a GPU node with or without verl installed.

Not part of CI (no GPU there). Each section needs only torch with CUDA and transformers;
where verl 0.9.1 is importable (the GPU environment, envs/train-gpu.yaml) it also goes
through verl's own entry points:

    python benchmarks/gpu_check_verl.py [--groups 512] [--length 4096] [--rollouts 8]
                                        [--local-steps 3] [--time-limit 450]
                                        [--sections estimator,agent,local,critic]

1. estimator: ``calibrate`` on CUDA tensors of the paper's batch shape (groups x 5 rollouts x
   length tokens) equals ``calibrate`` on CPU; prints both timings and their ratio. With verl:
   also through verl's ``compute_advantage`` (the ``calibadv`` estimator), with the ratio to
   verl's GRPO on the same CUDA batch.
2. agent: the Search-R1 rollout (``run_search_rollout``; with verl: our registered
   ``calibadv_search`` loop, instantiated through verl's registry) drives a tiny random Qwen2
   on CUDA through a server with ``LLMServerClient.generate``'s interface over HF ``generate``
   (stop strings, max tokens, log-probs). It returns verl's ``TokenOutput`` (a field-for-field
   copy when verl is absent) with the ``extra_fields`` verl's client adds (weight version,
   min/max global steps); checks masks, spans and the fields every output must carry.
3. local: a few full RL steps of the local backend (``LocalTrainer``: rollouts, ``calibrate``,
   PPO update) of a tiny model on CUDA in bfloat16 (the cluster's dtype) over the synthetic
   world, with a word-overlap search over the world's corpus standing in for the retrieval
   server (no FAISS needed).
4. critic: StepSearch's critic as verl builds it: our value-head loader
   (``calibadv.train.verl.valuehead``, which the plugin puts in place of verl's; without verl
   the same ``from_pretrained`` call) with sdpa in bfloat16 on CUDA, values of a padded batch,
   a clipped value-loss step (verl's ``compute_value_loss`` where verl is importable), finite
   gradients and changed weights.

The whole script runs under ``--time-limit`` seconds (default 450, under 8 minutes): past it,
it stops with a non-zero exit naming the section it was in.

Prints "skipped: no CUDA device" and exits 0 without a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout


def have_verl() -> bool:
    try:
        import verl.experimental.agent_loop.agent_loop  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: check without verl
        return False
    return True


def _timed(fn, repeats: int, cuda: bool = True) -> tuple[float, Any]:
    import torch

    times, out = [], None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# -- 1. estimator ---------------------------------------------------------------------------
def check_estimator(groups: int, length: int, repeats: int, with_verl: bool) -> None:
    import torch

    from bench_advantage import make_batch  # the paper-shaped synthetic batch

    from calibadv.methods.advantage import CalibConfig, calibrate
    from calibadv.methods.presets import get_method

    scores, ok, mask, gidx, spans, docs, thinks = make_batch(groups, 5, length, 4, 3, seed=0)
    method = get_method("calibadv")
    config = CalibConfig.from_dict(method["calibration"])
    t_cpu, (expected, _) = _timed(
        lambda: calibrate(scores, ok, mask, list(gidx), spans, docs, thinks, config), repeats,
        cuda=False)
    s_cuda, m_cuda = scores.cuda(), mask.cuda()
    t_gpu, (got, _) = _timed(
        lambda: calibrate(s_cuda, ok, m_cuda, list(gidx), spans, docs, thinks, config),
        repeats)
    assert got.is_cuda, "calibrate moved the advantages off the GPU"
    torch.testing.assert_close(got.cpu().float(), expected.float(), atol=1e-5, rtol=1e-5)
    print(f"estimator: {len(gidx)} rollouts x {length} tokens on {torch.cuda.get_device_name()}: "
          f"calibrate CUDA {t_gpu * 1e3:.1f} ms vs CPU {t_cpu * 1e3:.1f} ms "
          f"(ratio {t_gpu / t_cpu:.2f}x); equal")
    if with_verl:
        check_estimator_through_verl(scores, ok, mask, gidx, spans, docs, thinks, method,
                                     expected, repeats)


def check_estimator_through_verl(scores, ok, mask, gidx, spans, docs, thinks, method, expected,
                                 repeats: int) -> None:
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    import calibadv.train.verl.plugin  # noqa: F401
    from calibadv.train.verl.estimator import rollout_context

    algo = OmegaConf.create({"adv_estimator": "calibadv", "norm_adv_by_std_in_grpo": True,
                             "calibadv": {"calibration": method["calibration"]}})
    rewards = torch.zeros_like(mask, dtype=torch.float32)
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    rewards[last] = scores.float()
    extras = [{"turn_spans": s, "doc_ids": d, "thinks": t, "format_ok": bool(o)}
              for s, d, t, o in zip(spans, docs, thinks, ok)]
    uid = np.array([str(g) for g in gidx], dtype=object)

    def run(adv_estimator: str):
        data = DataProto.from_dict(
            tensors={"token_level_rewards": rewards.cuda(), "response_mask": mask.cuda()},
            non_tensors={"uid": uid})
        with rollout_context(extras):
            return compute_advantage(data, adv_estimator=adv_estimator, config=algo)

    t_ours, out = _timed(lambda: run("calibadv"), repeats)
    t_grpo, _ = _timed(lambda: run("grpo"), repeats)
    got = out.batch["advantages"]
    assert got.is_cuda, "advantages left the GPU"
    torch.testing.assert_close(got.cpu(), expected.float(), atol=1e-5, rtol=1e-5)
    print(f"estimator through verl's compute_advantage: calibadv {t_ours * 1e3:.1f} ms, "
          f"verl grpo {t_grpo * 1e3:.1f} ms, ratio {t_ours / t_grpo:.2f}x; equals calibrate")


# -- 2. agent loop --------------------------------------------------------------------------
@dataclass
class TokenOutputCopy:
    """verl's ``workers.rollout.replica.TokenOutput``, field for field (used without verl)."""

    token_ids: list[int]
    log_probs: list[float] | None = None
    routed_experts: Any = None
    stop_reason: str | None = None
    num_preempted: int | None = None
    extra_fields: dict[str, Any] = field(default_factory=dict)


class HFServerManager:
    """``LLMServerClient.generate`` over HF ``generate`` on CUDA (vLLM stand-in).

    Returns what verl's client returns: the server's ``TokenOutput`` (ids cut at a stop
    string, kept, and at ``max_tokens``; log-probs; ``stop_reason="completed"``) with
    ``extra_fields`` = the server's ``global_steps``/``num_cached_tokens`` plus the client's
    ``min_global_steps``/``max_global_steps``.
    """

    def __init__(self, model, tokenizer, global_steps: int = 0) -> None:
        self.model, self.tokenizer, self.global_steps = model, tokenizer, global_steps
        try:
            from verl.workers.rollout.replica import TokenOutput
        except Exception:  # noqa: BLE001
            TokenOutput = TokenOutputCopy
        self.output_type = TokenOutput

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None,
                       video_data=None, audio_data=None, mm_processor_kwargs=None, **kwargs):
        import torch

        ids = torch.tensor([list(prompt_ids)], device=next(self.model.parameters()).device)
        with torch.no_grad():
            out = self.model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True,
                temperature=sampling_params.get("temperature", 1.0) or 1.0,
                top_p=sampling_params.get("top_p", 1.0),
                max_new_tokens=sampling_params["max_tokens"],
                stop_strings=sampling_params.get("stop"), tokenizer=self.tokenizer,
                output_scores=True, return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id)
            logp = self.model.compute_transition_scores(out.sequences, out.scores,
                                                        normalize_logits=True)
        new = out.sequences[0, ids.shape[1]:].tolist()
        steps = self.global_steps
        return self.output_type(
            token_ids=new,
            log_probs=logp[0].float().tolist() if sampling_params.get("logprobs") else None,
            stop_reason="completed", num_preempted=0,
            extra_fields={"global_steps": steps, "num_cached_tokens": 0,
                          "min_global_steps": steps, "max_global_steps": steps})


def _tiny_policy():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from calibadv.models.tokenizer import train_tokenizer

    texts = ["<think> a </think><search> b </search>", "<think> c </think><answer> d </answer>",
             "Answer the question below. Question: who?"] * 30
    tok = train_tokenizer(texts, vocab_size=400)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      attn_implementation="sdpa")
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).cuda().eval(), tok


def check_agent_loop(rollouts: int, with_verl: bool) -> None:
    from calibadv.agent.types import AgentConfig
    from calibadv.data.prompt import build_messages, prompt_ids
    from calibadv.retrieval.client import Passage
    from calibadv.train.verl.search_rollout import run_search_rollout
    from calibadv.train.verl.settings import LoopSettings

    model, tok = _tiny_policy()
    server = HFServerManager(model, tok, global_steps=3)

    async def search(queries, topk):
        return [[Passage("d1", "T", "some text")] * topk for _ in queries]

    sample = {"raw_prompt": build_messages("who wrote it?"), "extra_info": {"index": 0},
              "data_source": "check", "reward_model": {"ground_truth": {"target": ["x"]}}}
    params = {"temperature": 1.0, "top_p": 0.95, "logprobs": True}
    if with_verl:
        loop_fn = _verl_loop_factory(server, tok, search)
    else:
        settings = LoopSettings(agent=AgentConfig(prethink=True, max_turns=4,
                                                  max_tokens_per_turn=32,
                                                  max_response_tokens=256),
                                require_search=True, retrieval_url="http://unused", topk=3)

        async def loop_fn():
            ids = prompt_ids(tok, sample["raw_prompt"], prethink=True)
            done = await run_search_rollout(server.generate, tok, settings, ids, params, search)
            t = done.traj
            return t.response_ids, t.loss_mask, done.extra_fields(settings, sample)

    async def many():
        return await asyncio.gather(*[loop_fn() for _ in range(rollouts)])

    t0 = time.perf_counter()
    outs = asyncio.run(many())
    for response_ids, mask, ef in outs:
        assert len(response_ids) == len(mask) <= 256
        generated = sum(b - a for a, b in ef["turn_spans"])
        assert sum(mask) == generated, "mask must be 1 exactly on generated turns"
        assert len(ef["turn_spans"]) in (len(ef["doc_ids"]), len(ef["doc_ids"]) + 1)
        for key in ("min_global_steps", "max_global_steps"):  # read by verl's _compute_metrics
            assert ef[key] == 3, (key, ef.get(key))
    kind = "verl's registry" if with_verl else "run_search_rollout (no verl)"
    print(f"agent loop via {kind}: {rollouts} rollouts on CUDA in {time.perf_counter() - t0:.1f} s;"
          f" turns per rollout {[len(ef['turn_spans']) for _, _, ef in outs]}; "
          f"output type {server.output_type.__module__}.{server.output_type.__name__}")


def _verl_loop_factory(server, tok, search):
    import hydra
    from hydra import compose, initialize_config_dir
    import verl
    from verl.experimental.agent_loop.agent_loop import (
        DictConfigWrap,
        ToolListWrap,
        _agent_loop_registry,
    )
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import calibadv.train.verl.plugin  # noqa: F401
    from calibadv.data.prompt import build_messages
    from calibadv.methods.presets import get_method
    from calibadv.spec import run_spec_from_dict
    from calibadv.train.verl import agent_loop as loop_mod
    from calibadv.train.verl.overrides import build_overrides

    spec = run_spec_from_dict({
        "backend": "verl", "model": {"path": "tiny"}, "method": get_method("calibadv"),
        "data": {"train": "t.parquet"}, "retrieval": {"url": "http://unused"},
        "agent": {"max_tokens_per_turn": 32, "max_response_tokens": 256},
        "resources": {"gpus": 1, "cpus": 8}})
    conf_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        config = compose(config_name="ppo_trainer",
                         overrides=build_overrides(spec, Path("/tmp/gpu-check"), "http://unused"))
    loop_mod.retrieval_search = lambda url, retries=5: search

    async def one():
        loop = hydra.utils.instantiate(
            config=_agent_loop_registry["calibadv_search"],
            trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tok,
            processor=None, hf_model_type="qwen2", dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(config.data), tools=ToolListWrap([]))
        out = await loop.run({"temperature": 1.0, "top_p": 0.95, "logprobs": True},
                             raw_prompt=build_messages("who wrote it?"),
                             extra_info={"index": 0}, data_source="check",
                             reward_model={"ground_truth": {"target": ["x"]}})
        return out.response_ids, out.response_mask, out.extra_fields

    return one


# -- 3. local backend -------------------------------------------------------------------------
class WordOverlapSearch:
    """Top-k passages of the world's corpus by shared words (stands in for FAISS + encoder)."""

    def __init__(self, corpus: Path, topk: int) -> None:
        from calibadv.io import iter_jsonl
        from calibadv.retrieval.client import Passage

        self.topk = topk
        self.docs = []
        for row in iter_jsonl(corpus):
            title, _, text = row["contents"].partition("\n")
            self.docs.append((Passage(str(row["id"]), title.strip('"'), text),
                              set(re.findall(r"\w+", row["contents"].lower()))))

    def __call__(self, queries):
        out = []
        for q in queries:
            words = set(re.findall(r"\w+", q.lower()))
            ranked = sorted(self.docs, key=lambda d: -len(words & d[1]))
            out.append([p for p, _ in ranked[: self.topk]])
        return out


def check_local_steps(steps: int) -> None:
    import torch

    import calibadv.data.questions as question_data
    from calibadv.io import iter_jsonl, read_jsonl
    from calibadv.methods.presets import get_method
    from calibadv.models.tiny import TinyConfig, build_tiny_model
    from calibadv.spec import run_spec_from_dict
    from calibadv.synth import write_world
    from calibadv.train.local import LocalTrainer

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-local-"))
    write_world(tmp / "world", seed=0, size="tiny")
    world = tmp / "world"
    build_tiny_model(world / "corpus.jsonl", [world / "train.jsonl"], tmp / "model",
                     TinyConfig(hidden_size=192, num_hidden_layers=2))
    questions = []
    for i, row in enumerate(iter_jsonl(world / "train.jsonl")):
        if i == 64:
            break
        from calibadv.data.prompt import build_messages

        questions.append(question_data.Question(id=str(row["id"]), question=row["question"],
                                                messages=build_messages(row["question"]),
                                                golden_answers=list(row["golden_answers"]),
                                                data_source="hotpotqa", index=i))
    question_data.load_questions = lambda path, limit=None: questions  # no pandas on a bare GPU image
    spec = run_spec_from_dict({
        "backend": "local", "model": {"path": str(tmp / "model"), "dtype": "bfloat16"},
        "method": get_method("calibadv"), "data": {"train": str(tmp / "train.parquet")},
        "agent": {"max_turns": 2, "max_tokens_per_turn": 48, "max_response_tokens": 256},
        "training": {"steps": steps, "batch_size": 8, "mini_batch_size": 8, "group_size": 5,
                     "micro_batch_size": 8, "lr": 1e-5, "save_every": steps,
                     "val_before_train": False}})
    t0 = time.perf_counter()
    trainer = LocalTrainer(spec, tmp / "run", WordOverlapSearch(world / "corpus.jsonl", 3))
    first = next(trainer.model.parameters())
    assert first.is_cuda, "the local backend did not pick the GPU"
    assert first.dtype == torch.bfloat16, f"the policy is {first.dtype}, not bfloat16"
    trainer.train()
    rows = read_jsonl(tmp / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor([r["loss"], r["grad_norm"]])).all() for r in rows)
    print(f"local backend: {steps} RL steps of a {trainer.model.num_parameters() / 1e6:.1f}M "
          f"bf16 model on CUDA in {time.perf_counter() - t0:.1f} s; per step (reward, format, loss, "
          f"grad norm, s): " + "; ".join(
              f"{r['reward_mean']:.2f}, {r['format_rate']:.2f}, {r['loss']:.4f}, "
              f"{r['grad_norm']:.3f}, {r['time_s']:.1f}" for r in rows))


# -- 4. critic (StepSearch's PPO) ------------------------------------------------------------
def _load_critic(model_dir: Path, with_verl: bool):
    """The critic the way verl's FSDP engine loads a value model (``_build_module``: one
    label, no dropout, then ``load_valuehead_model``), with the configured attention."""
    import torch
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(model_dir, attn_implementation="sdpa")
    hf_config.num_labels = 1
    hf_config.classifier_dropout = 0.0
    if with_verl:
        import verl  # noqa: F401  (loads the plugin)
        from verl.utils.model import load_valuehead_model

        from calibadv.train.verl.valuehead import load_valuehead_model as ours

        assert load_valuehead_model is ours, "the plugin did not replace verl's value-head loader"
        return load_valuehead_model(str(model_dir), torch.bfloat16, hf_config, False)
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification.from_pretrained(
        model_dir, torch_dtype=torch.bfloat16, config=hf_config,
        attn_implementation=hf_config._attn_implementation)


def check_critic(with_verl: bool) -> None:
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-critic-"))
    model, tok = _tiny_policy()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    t0 = time.perf_counter()
    critic = _load_critic(tmp, with_verl).cuda().train()
    assert critic.config._attn_implementation == "sdpa", critic.config._attn_implementation
    first = next(critic.parameters())
    assert first.dtype == torch.bfloat16, first.dtype
    ids = torch.randint(0, tok.vocab_size, (4, 48), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :10] = 0  # left padding, as verl's batches have
    values = critic(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()
    assert values.shape == ids.shape and torch.isfinite(values).all()
    returns = torch.rand_like(values)
    old = values.detach() + 0.01
    resp = mask.float()
    if with_verl:
        from verl.trainer.ppo.core_algos import compute_value_loss

        loss, _ = compute_value_loss(vpreds=values, returns=returns, values=old,
                                     response_mask=resp, cliprange_value=0.5)
    else:  # verl's clipped value loss (core_algos.compute_value_loss), token-mean
        clipped = old + (values - old).clamp(-0.5, 0.5)
        loss = 0.5 * (torch.max((values - returns) ** 2, (clipped - returns) ** 2) * resp).sum()
        loss = loss / resp.sum()
    before = first.detach().clone()
    opt = torch.optim.AdamW(critic.parameters(), lr=1e-3)
    loss.backward()
    grads = [p.grad for p in critic.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), "non-finite critic gradients"
    opt.step()
    assert not torch.equal(before, first.detach()), "the critic's weights did not change"
    print(f"critic: {type(critic).__name__} (sdpa, bf16) loaded "
          f"{'through the plugin' if with_verl else 'as our loader does (no verl)'}, "
          f"value loss {loss.item():.4f}, one step in {time.perf_counter() - t0:.1f} s")


class SectionTimeout(Exception):
    """The script ran past --time-limit."""


def _alarm(limit: int, section: list[str]) -> None:
    import signal

    def fire(_signum, _frame):
        raise SectionTimeout(f"gpu check ran past --time-limit {limit} s in section "
                             f"{section[0]!r}")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(limit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=512)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--local-steps", type=int, default=3)
    ap.add_argument("--sections", default="estimator,agent,local,critic",
                    help="comma-separated subset of estimator, agent, local, critic")
    ap.add_argument("--time-limit", type=int, default=450,
                    help="seconds for the whole script (default 450: under 8 minutes)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    with_verl = have_verl()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on "
          f"{torch.cuda.get_device_name()}; verl {'importable' if with_verl else 'not installed'}")
    sections = set(args.sections.split(","))
    unknown = sections - {"estimator", "agent", "local", "critic"}
    if unknown:
        print(f"error: unknown section(s) {', '.join(sorted(unknown))} (known: estimator, "
              "agent, local, critic)", file=sys.stderr)
        return 2
    current = ["start"]
    _alarm(args.time_limit, current)
    runs = [("estimator", lambda: check_estimator(args.groups, args.length, args.repeats,
                                                  with_verl)),
            ("agent", lambda: check_agent_loop(args.rollouts, with_verl)),
            ("local", lambda: check_local_steps(args.local_steps)),
            ("critic", lambda: check_critic(with_verl))]
    try:
        for name, fn in runs:
            if name in sections:
                current[0] = name
                fn()
    except SectionTimeout as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("gpu check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
