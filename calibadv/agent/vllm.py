"""vLLM generation for GPU evaluation: same ``GenerateFn`` contract as :class:`HFGenerator`.

Imported only on demand; without vLLM installed, constructing the generator raises a
:class:`CalibAdvError` telling the user to install the ``gpu`` extra or use ``--generator hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from calibadv.agent.types import Generation, GenerationRequest
from calibadv.errors import CalibAdvError


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise CalibAdvError(
            "the vLLM generator needs the 'vllm' package (pip install 'calibadv[gpu]' on a "
            f"GPU machine), or pass --generator hf ({err})"
        ) from None
    return vllm


class VLLMGenerator:
    """``GenerateFn`` over an offline ``vllm.LLM``; log-probs are the sampled tokens' own."""

    def __init__(
        self,
        model_path: str,
        temperature: float = 0.0,
        top_p: float = 1.0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        llm: Any = None,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = llm or vllm.LLM(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            enable_prefix_caching=True,
        )
        self.temperature = temperature
        self.top_p = top_p
        self.eos_id = self.llm.get_tokenizer().eos_token_id

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        params = [
            self._vllm.SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=r.max_tokens,
                stop=list(r.stop),
                include_stop_str_in_output=True,
                logprobs=0,
                skip_special_tokens=False,
            )
            for r in requests
        ]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            tokens = list(comp.token_ids)
            logps = [
                float(step[tok].logprob) if step and tok in step else 0.0
                for tok, step in zip(tokens, comp.logprobs or [{}] * len(tokens), strict=False)
            ]
            if comp.finish_reason == "stop" and tokens and tokens[-1] == self.eos_id:
                reason = "eos"
            else:
                reason = "stop" if comp.finish_reason == "stop" else "length"
            results.append(Generation(tokens, logps, comp.text, reason))
        return results
