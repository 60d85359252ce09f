"""Batched decoding with a KV cache kept across the turns of a rollout.

:class:`HFGenerator` hands every turn to ``model.generate``, which re-reads the whole context
(prompt, earlier turns, observations) each turn and pays generate's per-token machinery (logits
processors, stop-string criteria, cache bookkeeping) on every step. On a ~1M-parameter model
that machinery, not the arithmetic, is the cost (benchmarks/bench_rollout.py measures it).

:class:`KVCacheGenerator` is the same ``GenerateFn`` contract with a small decode loop around the
model's own forward:

* **prefix reuse**: after a turn, each row's keys/values are kept under its token sequence; the
  next request whose prompt extends that sequence (the protocol appends the generated turn and
  the observation) only feeds the new tokens. Entries live for one call, and are dropped when the
  weights change (an optimiser step bumps the parameters' version counters);
* **one forward per step** for all rows, through a compact re-implementation of the Qwen2 /
  Llama decoder (:class:`DecoderRunner`, ~40 lines) on preallocated key/value tensors, using
  the model's own modules for projections, norms, rotary embedding and MLP: generic HF forward
  machinery (mask builders, cache objects, output classes) cost ~10x the arithmetic per step
  at this size; fused SDPA reads new prompt/observation tokens, plain matmuls serve one-token
  steps; finished rows leave the batch;
* **identical prompts are read once** (the G rollouts of a question share their first turn's
  prompt);
* stop strings are checked on the decoded text of each row, exactly as :class:`HFGenerator`
  cuts its rows, so both return the same tokens for the same model under greedy decoding
  (tests/agent/test_kvcache.py checks this token for token against ``model.generate``).

Sampling draws from ``softmax(logits / temperature)`` restricted to the top-p nucleus, with the
global torch RNG (so checkpointed RNG state makes resumed runs repeat); the returned log-probs
are those of the raw model distribution (temperature 1), as in :class:`HFGenerator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calibadv.agent.hf import init_sampling
from calibadv.agent.types import Generation, GenerationRequest
from calibadv.errors import ConfigError

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values), each (heads, len, dim)


@dataclass
class _Row:
    """One request in flight."""

    req: GenerationRequest
    tokens: list[int]
    logps: list[float]
    text: str = ""
    finish: str | None = None


def sample_next(logits: torch.Tensor, greedy: bool, temperature: float, top_p: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, their log-probs under the raw distribution) for a (rows, vocab) block.

    Sampling inverts each row's CDF at one uniform draw: one random number per row, where
    ``torch.multinomial`` or an exponential race spend one per vocabulary entry (10-20 ms per
    step on CPU for 32 rows).
    """
    logits = logits.float()
    if greedy:
        tok = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:  # smallest set whose mass reaches top_p (the top token always stays)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        cdf = probs.cumsum(dim=-1)
        u = torch.rand((cdf.shape[0], 1), device=cdf.device) * cdf[:, -1:]
        # right=True: the first entry whose CDF exceeds u, so a zero-probability token is never
        # drawn
        tok = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[1] - 1)
    lp = logits.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return tok, lp


class DecoderRunner:
    """The forward pass of a Qwen2/Llama-layout HF decoder on caller-owned KV tensors.

    ``K[l]``/``V[l]`` are (rows, kv_heads, columns, head_dim); a call writes the new tokens'
    keys/values at columns ``[start, start + q)`` and attends over ``[0, start + q)`` with the
    additive ``bias`` (rows, 1, 1, q, start + q). Only the last position's logits are computed.
    """

    SUPPORTED = ("qwen2", "llama")

    def __init__(self, model: Any) -> None:
        cfg = model.config
        kind = getattr(cfg, "model_type", None)
        if kind not in self.SUPPORTED or getattr(cfg, "use_sliding_window", False):
            raise ConfigError(
                f"the kv generator runs Qwen2/Llama decoders without sliding windows, not "
                f"{kind!r}; use the hf generator (model.generate) for this model"
            )
        self.model = model
        self.layers = list(model.model.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.q_heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.group = self.q_heads // self.kv_heads
        self.scaling = attn.scaling
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

        self.rope = apply_rotary_pos_emb  # the same function Llama uses

    def new_kv(self, rows: int, columns: int, device: torch.device, dtype: torch.dtype
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        shape = (rows, self.kv_heads, columns, self.head_dim)
        n = len(self.layers)
        return ([torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)],
                [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n)])

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, K: list[torch.Tensor],
                 V: list[torch.Tensor], start: int, bias: torch.Tensor) -> torch.Tensor:
        rows, q = ids.shape
        end = start + q
        x = self.model.model.embed_tokens(ids)
        cos, sin = self.model.model.rotary_emb(x, pos)
        for layer, k_all, v_all in zip(self.layers, K, V, strict=True):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            qs = a.q_proj(h).view(rows, q, self.q_heads, self.head_dim).transpose(1, 2)
            ks = a.k_proj(h).view(rows, q, self.kv_heads, self.head_dim).transpose(1, 2)
            vs = a.v_proj(h).view(rows, q, self.kv_heads, self.head_dim).transpose(1, 2)
            qs, ks = self.rope(qs, ks, cos, sin)
            k_all[:, :, start:end] = ks
            v_all[:, :, start:end] = vs
            if q == 1:  # a decode step: plain matmuls beat SDPA's set-up at this size
                # query head j reads kv head j // group (HF's repeat_kv), without copying the cache
                qg = qs.reshape(rows, self.kv_heads, self.group, self.head_dim)
                scores = (qg @ k_all[:, :, :end].transpose(-1, -2)) * self.scaling
                scores = scores.view(rows, self.kv_heads, self.group, 1, end) + bias
                probs = torch.softmax(scores.float(), dim=-1).to(vs.dtype)
                out = probs.view(rows, self.kv_heads, self.group, end) @ v_all[:, :, :end]
                out = out.view(rows, self.q_heads, 1, self.head_dim).transpose(1, 2)
            else:  # reading a prompt or an observation: the fused kernel is ~5x faster on CPU
                out = torch.nn.functional.scaled_dot_product_attention(
                    qs, k_all[:, :, :end], v_all[:, :, :end], attn_mask=bias[:, :, 0],
                    scale=self.scaling, enable_gqa=True).transpose(1, 2)
            x = x + a.o_proj(out.reshape(rows, q, self.q_heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.lm_head(self.model.model.norm(x[:, -1])).float()


def attention_bias(valid: torch.Tensor, start: int, q: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, 1, 1, q, start + q) additive mask: key columns a row holds, causal in the block.

    Masked entries get the dtype's most negative finite value (not -inf), so a padding query
    with nothing to attend to gets finite garbage, never NaN that could leak into real rows.
    """
    end = start + q
    allowed = valid[:, None, :end].expand(-1, q, -1).clone()
    if q > 1:
        col = torch.arange(end, device=valid.device)
        allowed &= col[None, None, :] <= (start + torch.arange(q, device=valid.device))[None, :, None]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[:, None, None]


class KVCacheGenerator:
    """``GenerateFn`` over a HF Qwen2/Llama causal LM: own decode loop, cross-turn KV reuse.

    ``temperature=0`` (or ``greedy=True``) is greedy. ``reuse_prefix=False`` re-reads every
    prompt (for measuring what the reuse buys).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        max_batch_size: int = 256,
        reuse_prefix: bool = True,
    ) -> None:
        self.runner = DecoderRunner(model)  # refuses an architecture it does not run, first
        init_sampling(self, model, tokenizer, temperature, top_p, greedy, max_batch_size)
        self.reuse_prefix = reuse_prefix
        self._store: dict[tuple[int, ...], KV] = {}
        self._store_lengths: set[int] = set()
        self._weights_version: tuple[int, ...] = ()
        self.stats = {"prompt_tokens": 0, "reused_tokens": 0, "forward_calls": 0}

    # -- public ------------------------------------------------------------------------------
    def __call__(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        version = tuple(p._version for p in self.model.parameters())
        if version != self._weights_version:  # an optimiser step: cached keys are stale
            self.reset()
            self._weights_version = version
        store: dict[tuple[int, ...], KV] = {}
        out: list[Generation] = []
        for i in range(0, len(requests), self.max_batch_size):
            out.extend(self._batch(requests[i : i + self.max_batch_size], store))
        self._store = store  # entries live for one call: the next turn's prefixes
        self._store_lengths = {len(k) for k in store}
        return out

    def reset(self) -> None:
        """Forget every cached prefix."""
        self._store = {}
        self._store_lengths = set()

    # -- helpers ------------------------------------------------------------------------------
    def _piece(self, tok: int) -> str:
        piece = self._piece_cache.get(tok)
        if piece is None:
            piece = self.tokenizer.decode([tok], skip_special_tokens=False)
            self._piece_cache[tok] = piece
        return piece

    def _lookup(self, prompt: tuple[int, ...]) -> tuple[int, KV | None]:
        """The longest cached strict prefix of ``prompt`` (at least one token must be new)."""
        if not self.reuse_prefix:
            return 0, None
        for n in sorted(self._store_lengths, reverse=True):
            if n < len(prompt):
                kv = self._store.get(prompt[:n])
                if kv is not None:
                    return n, kv
        return 0, None

    def _step_done(self, row: _Row, tok: int, logp: float) -> None:
        """Append one token; set ``row.finish`` when it ends the turn (as HFGenerator._cut)."""
        row.tokens.append(tok)
        row.logps.append(logp)
        if tok in self.eos_ids:
            row.finish = "eos"
            return
        row.text += self._piece(tok)
        if any(s in row.text[-(len(s) + 32) :] for s in row.req.stop):
            row.finish = "stop"
        elif len(row.tokens) >= row.req.max_tokens:
            row.finish = "length"

    # -- one batch ------------------------------------------------------------------------------
    @torch.no_grad()
    def _batch(self, requests: Sequence[GenerationRequest], store: dict) -> list[Generation]:
        if not requests:
            return []
        param = next(self.model.parameters())
        device, dtype = param.device, param.dtype
        rows = [_Row(req, [], []) for req in requests]

        # Distinct prompts, each read once (the G rollouts of a question share their prompt).
        uniq: dict[tuple[int, ...], list[int]] = {}
        for i, req in enumerate(requests):
            uniq.setdefault(tuple(req.prompt_ids), []).append(i)
        prompts = list(uniq)
        hits = [self._lookup(p) for p in prompts]
        past = [n for n, _ in hits]
        suffix = [p[n:] for p, n in zip(prompts, past, strict=True)]
        P, W = max(past), max(len(s) for s in suffix)
        columns = P + W + max(r.max_tokens for r in requests)
        K, V = self.runner.new_kv(len(prompts), columns, device, dtype)
        valid = torch.zeros((len(prompts), columns), dtype=torch.bool)
        ids = torch.full((len(prompts), W), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(prompts), W), dtype=torch.long)
        for r, ((n, kv), s) in enumerate(zip(hits, suffix, strict=True)):
            if kv is not None:  # the cached prefix, right-aligned in columns [0, P)
                for layer, (k, v) in enumerate(kv):
                    K[layer][r, :, P - n : P] = k
                    V[layer][r, :, P - n : P] = v
                valid[r, P - n : P] = True
            ids[r, W - len(s) :] = torch.tensor(s, dtype=torch.long)
            pos[r, W - len(s) :] = torch.arange(n, n + len(s))
            valid[r, P + W - len(s) : P + W] = True
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self.stats["reused_tokens"] += sum(past)
        valid = valid.to(device)
        logits = self._forward(ids.to(device), pos.to(device), K, V, P, valid, dtype)
        next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)

        owner = [r for r, members in enumerate(uniq.values()) for _ in members]
        active = [i for members in uniq.values() for i in members]  # request of each batch row
        if len(active) != len(prompts):
            sel = torch.tensor(owner, device=device)
            K, V = [k[sel] for k in K], [v[sel] for v in V]
            valid, logits, next_pos = valid[sel], logits[sel], next_pos[sel]
        col = P + W
        while True:
            tok, lp = sample_next(logits, self.greedy, self.temperature, self.top_p)
            keep: list[int] = []
            for b, (i, t, l) in enumerate(zip(active, tok.tolist(), lp.tolist(), strict=True)):
                row = rows[i]
                if row.finish is not None:  # finished earlier, still in the batch
                    continue
                self._step_done(row, t, l)
                if row.finish is None:
                    keep.append(b)
                elif self.reuse_prefix:  # what this row has read: prompt + tokens[:-1]
                    cols = valid[b, :col]
                    store[tuple(row.req.prompt_ids) + tuple(row.tokens[:-1])] = [
                        (k[b, :, :col][:, cols].clone(), v[b, :, :col][:, cols].clone())
                        for k, v in zip(K, V, strict=True)]
            if not keep:
                break
            if 4 * len(keep) <= 3 * len(active):  # a quarter finished: shrink the batch
                sel = torch.tensor(keep, device=device)
                K, V = [k[sel] for k in K], [v[sel] for v in V]
                valid, tok, next_pos = valid[sel], tok[sel], next_pos[sel]
                active = [active[b] for b in keep]
            valid[:, col] = True
            logits = self._forward(tok.unsqueeze(-1), next_pos.unsqueeze(-1), K, V, col, valid,
                                   dtype)
            next_pos = next_pos + 1
            col += 1
        return [self._result(row) for row in rows]

    def _forward(self, ids, pos, K, V, start, valid, dtype) -> torch.Tensor:
        self.stats["forward_calls"] += 1
        return self.runner(ids, pos, K, V, start, attention_bias(valid, start, ids.shape[1], dtype))

    def _result(self, row: _Row) -> Generation:
        toks = row.tokens
        text_toks = toks[:-1] if row.finish == "eos" else toks
        text = self.tokenizer.decode(text_toks, skip_special_tokens=False)
        return Generation(toks, row.logps, text, row.finish or "length")
