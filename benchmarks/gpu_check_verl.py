"""GPU check of the verl plugin: estimator and agent loop on CUDA with a tiny model.

Not part of CI (no GPU there). Run it on a GPU node after installing envs/train-gpu.yaml:

    python benchmarks/gpu_check_verl.py [--groups 512] [--length 4096] [--rollouts 8]

1. Estimator: the ``calibadv`` estimator through verl's ``compute_advantage`` on CUDA tensors
   of the paper's batch shape equals ``calibrate`` on CPU; prints both timings and the ratio
   to verl's GRPO on the same CUDA batch.
2. Agent loop: our ``calibadv_search`` loop, instantiated through verl's registry, drives a
   tiny random Qwen2 on CUDA through a server manager with ``LLMServerClient.generate``'s
   signature (HF ``generate`` with stop strings instead of vLLM), with scripted passages;
   checks masks, spans and extra_fields of every ``AgentLoopOutput``.

Exits 0 with "skipped" when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _timed(fn, repeats: int) -> tuple[float, Any]:
    import torch

    times, out = [], None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def check_estimator(groups: int, length: int, repeats: int) -> None:
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_advantage import make_batch  # the paper-shaped synthetic batch

    import calibadv.verl_plugin  # noqa: F401
    from calibadv.advantage import CalibConfig, calibrate
    from calibadv.methods import get_method
    from calibadv.train.verl.estimator import rollout_context

    scores, ok, mask, gidx, spans, docs, thinks = make_batch(groups, 5, length, 4, 3, seed=0)
    method = get_method("calibadv")
    algo = OmegaConf.create({"adv_estimator": "calibadv", "norm_adv_by_std_in_grpo": True,
                             "calibadv": {"calibration": method["calibration"]}})
    rewards = torch.zeros_like(mask)
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    rewards[last] = scores
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
    expected, _ = calibrate(scores, ok, mask, list(gidx), spans, docs, thinks,
                            CalibConfig.from_dict(method["calibration"]))
    got = out.batch["advantages"]
    assert got.is_cuda, "advantages left the GPU"
    torch.testing.assert_close(got.cpu(), expected.float(), atol=1e-5, rtol=1e-5)
    print(f"estimator: {len(uid)} rollouts x {length} tokens on {torch.cuda.get_device_name()}: "
          f"calibadv {t_ours * 1e3:.1f} ms, verl grpo {t_grpo * 1e3:.1f} ms, "
          f"ratio {t_ours / t_grpo:.2f}x; equals calibrate on CPU")


class HFServerManager:
    """``LLMServerClient.generate`` signature on a HF model (vLLM stand-in for this check)."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer

    async def generate(self, request_id, *, prompt_ids, sampling_params, **_: Any):
        import torch
        from verl.workers.rollout.replica import TokenOutput

        ids = torch.tensor([list(prompt_ids)], device="cuda")
        out = self.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=True,
            temperature=sampling_params.get("temperature", 1.0),
            top_p=sampling_params.get("top_p", 1.0), max_new_tokens=sampling_params["max_tokens"],
            stop_strings=sampling_params.get("stop"), tokenizer=self.tokenizer,
            output_scores=True, return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id)
        new = out.sequences[0, ids.shape[1]:]
        logp = self.model.compute_transition_scores(out.sequences, out.scores,
                                                    normalize_logits=True)
        return TokenOutput(token_ids=new.tolist(), log_probs=logp[0].float().tolist())


def check_agent_loop(rollouts: int) -> None:
    import hydra
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from verl.experimental.agent_loop.agent_loop import (
        DictConfigWrap,
        ToolListWrap,
        _agent_loop_registry,
    )
    from verl.utils.dataset.rl_dataset import RLHFDataset

    import calibadv.verl_plugin  # noqa: F401
    from calibadv.data.prompt import build_messages
    from calibadv.methods import get_method
    from calibadv.models.tokenizer import train_tokenizer
    from calibadv.retrieval.client import Passage
    from calibadv.spec import run_spec_from_dict
    from calibadv.train.verl import agent_loop as loop_mod
    from calibadv.train.verl.overrides import build_overrides
    from hydra import compose, initialize_config_dir
    import verl

    texts = ["<think> a </think><search> b </search>", "<think> c </think><answer> d </answer>",
             "Answer the question below. Question: who?"] * 30
    tok = train_tokenizer(texts, vocab_size=400)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    model = Qwen2ForCausalLM(cfg).cuda().eval()
    spec = run_spec_from_dict({
        "backend": "verl", "model": {"path": "tiny"}, "method": get_method("calibadv"),
        "data": {"train": "t.parquet"}, "retrieval": {"url": "http://unused"},
        "agent": {"max_tokens_per_turn": 32, "max_response_tokens": 256},
        "resources": {"gpus": 1}})
    conf_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        config = compose(config_name="ppo_trainer",
                         overrides=build_overrides(spec, Path("/tmp/gpu-check"), "http://unused"))

    async def search(queries, topk):
        return [[Passage("d1", "T", "some text")] * topk for _ in queries]

    loop_mod.retrieval_search = lambda url, retries=5: search
    server = HFServerManager(model, tok)

    async def one():
        loop = hydra.utils.instantiate(
            config=_agent_loop_registry["calibadv_search"],
            trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tok,
            processor=None, hf_model_type="qwen2", dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(config.data), tools=ToolListWrap([]))
        return await loop.run({"temperature": 1.0, "top_p": 0.95, "logprobs": True},
                              raw_prompt=build_messages("who wrote it?"),
                              extra_info={"index": 0}, data_source="check",
                              reward_model={"ground_truth": {"target": ["x"]}})

    async def many():
        return await asyncio.gather(*[one() for _ in range(rollouts)])

    t0 = time.perf_counter()
    outs = asyncio.run(many())
    with torch.no_grad():
        for out in outs:
            ef = out.extra_fields
            assert len(out.response_ids) == len(out.response_mask) <= 256
            generated = sum(b - a for a, b in ef["turn_spans"])
            assert sum(out.response_mask) == generated, "mask must be 1 exactly on generated turns"
            assert len(ef["turn_spans"]) in (len(ef["doc_ids"]), len(ef["doc_ids"]) + 1)
    print(f"agent loop: {rollouts} rollouts on CUDA in {time.perf_counter() - t0:.1f} s; "
          f"turns per rollout {[len(o.extra_fields['turn_spans']) for o in outs]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=512)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rollouts", type=int, default=8)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    check_estimator(args.groups, args.length, args.repeats)
    check_agent_loop(args.rollouts)
    print("gpu check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
