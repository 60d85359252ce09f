"""Batched generation with HF transformers: the engine of the local backend and CPU evaluation.

Requests are left-padded into one batch and run through ``model.generate`` with stop strings;
each row is then cut at its own first stop string, end-of-sequence token or token limit. The
returned log-probs are those of the raw model distribution (temperature 1, no top-p), which is
what perplexity and the High-PPL ratio are defined on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calibadv.agent.types import Generation, GenerationRequest


def init_sampling(gen: Any, model: Any, tokenizer: Any, temperature: float, top_p: float,
                  greedy: bool, max_batch_size: int) -> None:
    """Set what every local generator (:class:`HFGenerator`, ``KVCacheGenerator``) shares: the
    checked sampling knobs, the pad id (EOS when the tokenizer has none) and the EOS ids the
    model's generation config declares, so both engines stop on exactly the same tokens."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    gen.model = model
    gen.tokenizer = tokenizer
    gen.greedy = greedy or temperature == 0
    gen.temperature = temperature
    gen.top_p = top_p
    gen.max_batch_size = max_batch_size
    gen.pad_id = tokenizer.pad_token_id
    if gen.pad_id is None:
        gen.pad_id = tokenizer.eos_token_id
    eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    gen.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    gen._piece_cache = {}


class HFGenerator:
    """``GenerateFn`` over a HF causal LM. ``temperature=0`` (or ``greedy=True``) is greedy."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        max_batch_size: int = 64,
    ) -> None:
        init_sampling(self, model, tokenizer, temperature, top_p, greedy, max_batch_size)

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out: list[Generation] = []
        for i in range(0, len(requests), self.max_batch_size):
            out.extend(self._batch(requests[i : i + self.max_batch_size]))
        return out

    def _piece(self, tok: int) -> str:
        piece = self._piece_cache.get(tok)
        if piece is None:
            piece = self.tokenizer.decode([tok], skip_special_tokens=False)
            self._piece_cache[tok] = piece
        return piece

    @torch.no_grad()
    def _batch(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        device = next(self.model.parameters()).device
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, req in enumerate(requests):
            n = len(req.prompt_ids)
            ids[row, width - n :] = torch.tensor(req.prompt_ids, dtype=torch.long)
            mask[row, width - n :] = 1
        stops = sorted({s for r in requests for s in r.stop})
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in requests),
            "do_sample": not self.greedy,
            "pad_token_id": self.pad_id,
            "return_dict_in_generate": True,
            "output_logits": True,
        }
        if not self.greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=self.tokenizer)
        result = self.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs
        )
        new = result.sequences[:, width:].cpu()
        steps = new.shape[1]
        logp = torch.zeros(new.shape, dtype=torch.float32)
        for t, logits in enumerate(result.logits[:steps]):
            lp = torch.log_softmax(logits.float(), dim=-1).cpu()
            logp[:, t] = lp.gather(1, new[:, t : t + 1]).squeeze(1)
        return [self._cut(req, new[row].tolist(), logp[row].tolist()) for row, req in enumerate(requests)]

    def _cut(self, req: GenerationRequest, tokens: list[int], logps: list[float]) -> Generation:
        """Keep one row's tokens up to its first stop string, EOS or its own token limit."""
        text = ""
        for k, tok in enumerate(tokens[: req.max_tokens]):
            if tok in self.eos_ids:
                return Generation(tokens[: k + 1], logps[: k + 1], self._decode(tokens[:k]), "eos")
            text += self._piece(tok)
            if any(s in text[-(len(s) + 32) :] for s in req.stop):
                return Generation(tokens[: k + 1], logps[: k + 1], self._decode(tokens[: k + 1]), "stop")
        kept = tokens[: req.max_tokens]
        return Generation(kept, logps[: len(kept)], self._decode(kept), "length")

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)
