"""Batched decoding with a KV cache kept across the turns of a rollout.

:class:`HFGenerator` hands every turn to ``model.generate``, which re-reads the whole context
(prompt, earlier turns, observations) each turn and pays generate's per-token machinery (logits
processors, stop-string criteria, cache bookkeeping) on every step. On a ~1M-parameter model
that machinery, not the arithmetic, is the cost (benchmarks/bench_rollout.py measures it).

:class:`KVCacheGenerator` is the same ``GenerateFn`` contract with a small decode loop around the
model's own forward:

* **prefix reuse**: after a turn, each row's keys/values are kept under its token sequence; the
  next request whose prompt extends that sequence (the protocol appends the generated turn and
  the observation) only feeds the new tokens. Entries live for one call (a reference to the
  finished batch's tensors and the row's column spans, copied into the next batch, so a call
  holds at most a few batches' caches), and are dropped when the weights change (an optimiser
  step bumps the parameters' version counters);
* **one forward per step** for all rows, through a compact re-implementation of the Qwen2 /
  Llama decoder (:class:`DecoderRunner`) on preallocated key/value tensors, using the model's
  own embedding, o/down projections, norm weights, rotary embedding and activation: generic HF
  forward machinery (mask builders, cache objects, output classes) cost ~10x the arithmetic
  per step at this size; fused SDPA reads new prompt/observation tokens, plain matmuls serve
  one-token steps; finished rows leave the batch;
* **reading new tokens** (a prompt, an observation) costs what the first layers do for every
  token, but the last layer only needs every token's keys/values: its queries, attention and
  MLP run for the last position alone (the one whose logits are sampled); rows are read in
  buckets of similar lengths, each padded only to its own longest;
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

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calibadv.agent.hf import init_sampling
from calibadv.agent.types import Generation, GenerationRequest
from calibadv.errors import ConfigError

#: a batch's keys (layers, rows, kv_heads, head_dim, columns) -- stored transposed, the layout
#: a decode step's query-key product reads fastest (half the time of reading them row-major)
#: -- and values (layers, rows, kv_heads, columns, head_dim)
KV = tuple[torch.Tensor, torch.Tensor]
#: one cached prefix: a finished batch's (keys, values), the row, and the column spans that
#: row holds, in order (its cached prefix and what it read and generated after it); copied
#: straight into the next batch that extends the prefix, never gathered in between
Cached = tuple[torch.Tensor, torch.Tensor, int, tuple[tuple[int, int], ...]]

#: row buckets for reading new tokens (rows sorted by suffix length, equal row counts)
PREFILL_BUCKETS = 4
#: prompts of a batch without a cached prefix that share at least this many leading tokens
#: (the instructions of every turn-1 prompt) read them once
MIN_SHARED_PREFIX = 16


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
    step on CPU for 32 rows). The CDF is left unnormalised (the draw is scaled by its total),
    and at temperature 1 the exponentials of the log-probs' normaliser serve as the weights.
    """
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    e = shifted.exp()
    log_z = e.sum(dim=-1).log()  # the raw distribution's normaliser, less the max
    if greedy:
        tok = logits.argmax(dim=-1)
    else:
        w = e if temperature == 1.0 else (shifted * (1.0 / temperature)).exp_()  # ∝ softmax(x/T)
        if top_p < 1.0:
            tok = nucleus_draw(w, top_p)
        else:
            cdf = w.cumsum(dim=-1)
            u = torch.rand((cdf.shape[0], 1), device=cdf.device) * cdf[:, -1:]
            # right=True: the first entry whose CDF exceeds u, so a zero-probability token is
            # never drawn
            tok = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[1] - 1)
    return tok, shifted.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - log_z


#: top-p looks at each row's NUCLEUS_WINDOW heaviest tokens first; only a row whose nucleus
#: reaches past them is sorted in full
NUCLEUS_WINDOW = 64


def nucleus_draw(w: torch.Tensor, top_p: float) -> torch.Tensor:
    """One token per row of the (rows, vocab) weights ``w``, drawn from the smallest set of
    heaviest tokens whose mass reaches ``top_p`` of the row's total (the top token always stays).

    A full sort of the vocabulary per row and step was most of a sampled decode step's time on
    CPU (3.7x instead of 6-7x over ``model.generate`` at top-p 0.95). The nucleus of a trained
    model is usually a handful of tokens, so a ``topk`` window decides it; the kept set is a
    prefix of the sorted weights, so the draw inverts that prefix's CDF directly.
    """
    need = top_p * w.sum(dim=-1, keepdim=True)
    vals, order = w.topk(min(NUCLEUS_WINDOW, w.shape[-1]), dim=-1)  # heaviest first
    mass = vals.cumsum(dim=-1)
    # the window decides a row's nucleus when the mass before the first token past it (the
    # window's total) exceeds need; other rows are sorted in full
    wide = mass[:, -1] <= need[:, 0]
    if not bool(wide.any()):
        return _draw_prefix(vals, order, mass, need)
    tok = torch.empty(w.shape[0], dtype=torch.long, device=w.device)
    narrow = ~wide
    if bool(narrow.any()):
        tok[narrow] = _draw_prefix(vals[narrow], order[narrow], mass[narrow], need[narrow])
    full_vals, full_order = w[wide].sort(dim=-1, descending=True)
    tok[wide] = _draw_prefix(full_vals, full_order, full_vals.cumsum(dim=-1), need[wide])
    return tok


def _draw_prefix(vals: torch.Tensor, order: torch.Tensor, mass: torch.Tensor, need: torch.Tensor
                 ) -> torch.Tensor:
    """Draw from the kept prefix of weights sorted heaviest first (``mass`` their running sum):
    a token is kept while the mass before it is <= need."""
    kept = ((mass - vals) <= need).sum(dim=-1, keepdim=True)  # >= 1: nothing comes before the top
    u = torch.rand((vals.shape[0], 1), device=vals.device) * mass.gather(-1, kept - 1)
    # right=True: the first entry whose running mass exceeds u (a zero weight is never drawn)
    pos = torch.minimum(torch.searchsorted(mass, u, right=True), kept - 1)
    return order.gather(-1, pos).squeeze(-1)


Linear = tuple[torch.Tensor, torch.Tensor | None]  # (weight, bias)


def _linear(x: torch.Tensor, wb: Linear, part: slice | None = None) -> torch.Tensor:
    """``x @ w[part].T + b[part]`` for a (weight, bias) pair."""
    w, b = wb
    if part is None:
        return torch.nn.functional.linear(x, w, b)
    return torch.nn.functional.linear(x, w[part], None if b is None else b[part])


def _fuse(*linears: Any) -> Linear:
    """One (weight, bias) for linear layers on the same input, outputs concatenated (a copy:
    :meth:`DecoderRunner.refresh` re-fuses it after the parameters changed)."""
    w = torch.cat([m.weight.detach() for m in linears])
    b = None if linears[0].bias is None else torch.cat([m.bias.detach() for m in linears])
    return w, b


@dataclass
class _LayerWeights:
    """One decoder layer as the runner reads it: plain tensors, q/k/v and gate/up fused."""

    norm1: torch.Tensor
    qkv: Linear
    o: Linear
    norm2: torch.Tensor
    gate_up: Linear
    down: Linear
    act: Any  # the MLP's activation (its forward, without the module-call machinery)


class DecoderRunner:
    """The forward pass of a Qwen2/Llama-layout HF decoder on caller-owned key/value tensors.

    ``K`` is (layers, rows, kv_heads, head_dim, columns) (keys transposed), ``V`` is (layers,
    rows, kv_heads, columns, head_dim); a call writes the new tokens' keys/values at columns
    ``[start, start + q)`` and attends over ``[0, start + q)`` with the additive ``bias``
    (rows, 1, q, start + q). Only the last position's logits are computed. Per decode step
    the generic modules' small operations, not their arithmetic, are much of the cost at ~1M
    parameters, so the runner calls the functional operations on the model's own weights and
    fuses what it can: q/k/v and gate/up each in one matrix product (re-fused by
    :meth:`refresh` after an optimiser step), one fused RMSNorm kernel, rotary cos/sin read
    from a table built with the model's own rotary embedding.
    """

    SUPPORTED = ("qwen2", "llama")

    def __init__(self, model: Any) -> None:
        cfg = model.config
        kind = getattr(cfg, "model_type", None)
        rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
                or {}).get("rope_type", "default")
        if (kind not in self.SUPPORTED or getattr(cfg, "use_sliding_window", False)
                or "dynamic" in rope or "longrope" in rope):
            raise ConfigError(
                f"the kv generator runs Qwen2/Llama decoders without sliding windows or "
                f"length-dependent rotary scaling, not {kind!r} (rope {rope!r}); use the hf "
                f"generator (model.generate) for this model"
            )
        self.model = model
        self.layers = list(model.model.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.q_heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.group = self.q_heads // self.kv_heads
        self.scaling = attn.scaling
        self.eps = self.layers[0].input_layernorm.variance_epsilon
        self.cos = self.sin = torch.empty(0)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the weights (after the parameters changed): q/k/v and gate/up fused."""
        def own(m: Any) -> Linear:  # views of the parameters: in-place steps show through
            return m.weight.detach(), None if m.bias is None else m.bias.detach()

        self.w = [_LayerWeights(
            layer.input_layernorm.weight.detach(),
            _fuse(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
            own(layer.self_attn.o_proj),
            layer.post_attention_layernorm.weight.detach(),
            _fuse(layer.mlp.gate_proj, layer.mlp.up_proj),
            own(layer.mlp.down_proj),
            layer.mlp.act_fn.forward) for layer in self.layers]
        self.embed = self.model.model.embed_tokens.weight.detach()
        self.norm = self.model.model.norm.weight.detach()
        self.head = own(self.model.lm_head)

    def reserve(self, positions: int) -> None:
        """Rotary cos/sin for positions ``[0, positions)``: the model's rotary embedding of
        those positions (the same numbers it gives position by position). ``sin`` is kept
        with the sign of HF's ``rotate_half`` folded into its first half."""
        if positions > self.cos.shape[0]:
            size = max(positions, 2 * self.cos.shape[0], 256)
            w = self.model.model.embed_tokens.weight
            cos, sin = self.model.model.rotary_emb(w, torch.arange(size, device=w.device)[None])
            half = self.head_dim // 2
            self.cos, self.sin = cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], -1)

    def new_kv(self, rows: int, columns: int, device: torch.device, dtype: torch.dtype
               ) -> KV:
        # zeros, not empty: a masked column's value must be finite (0 x NaN would leak)
        lead = (len(self.layers), rows, self.kv_heads)
        return (torch.zeros((*lead, self.head_dim, columns), device=device, dtype=dtype),
                torch.zeros((*lead, columns, self.head_dim), device=device, dtype=dtype))

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """HF's apply_rotary_pos_emb, ``x * cos + rotate_half(x) * sin``, with rotate_half's
        sign in the ``sin`` table (the same numbers, one operation fewer)."""
        half = self.head_dim // 2
        return x * cos + torch.cat([x[..., half:], x[..., :half]], -1) * sin

    def __call__(self, ids: torch.Tensor, pos: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                 start: int, bias: torch.Tensor) -> torch.Tensor:
        F = torch.nn.functional
        rows, q = ids.shape
        end = start + q
        d, qh, kh = self.head_dim, self.q_heads, self.kv_heads
        hidden = (self.embed.shape[1],)
        x = F.embedding(ids, self.embed)
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # (rows, 1, q, d)
        last = len(self.w) - 1
        for li, w in enumerate(self.w):
            h = F.rms_norm(x, hidden, w.norm1, self.eps)
            if li == last and q > 1:
                # reading new tokens, last layer: every position's keys/values are kept, but
                # only the last position's output is read (the logits), so its query,
                # attention and MLP run for that position alone (half of a two-layer read)
                kvs = _linear(h, w.qkv, slice(qh * d, None)).view(rows, q, 2 * kh, d)
                kvs = kvs.transpose(1, 2)
                ks, vs = self._rope(kvs[:, :kh], cos, sin), kvs[:, kh:]
                x, h, cos, sin, bias = (t[..., -1:, :] for t in (x, h, cos, sin, bias))
                qs = _linear(h, w.qkv, slice(0, qh * d)).view(rows, 1, qh, d)
                qs = self._rope(qs.transpose(1, 2), cos, sin)
            else:
                qkv = _linear(h, w.qkv).view(rows, q, qh + 2 * kh, d).transpose(1, 2)
                qk = self._rope(qkv[:, : qh + kh], cos, sin)
                qs, ks, vs = qk[:, :qh], qk[:, qh:], qkv[:, qh + kh :]
            K[li, :, :, :, start:end] = ks.transpose(-1, -2)
            V[li, :, :, start:end] = vs
            keys_t, values = K[li, :, :, :, :end], V[li, :, :, :end]
            nq = x.shape[1]
            if nq == 1:  # one query per row: plain matmuls beat SDPA's set-up at this size
                # query head j reads kv head j // group (HF's repeat_kv), without copying the cache
                qg = qs.reshape(rows, kh, self.group, d)
                scores = (qg @ keys_t) * self.scaling + bias
                probs = torch.softmax(scores.float(), dim=-1).to(values.dtype)
                out = (probs @ values).reshape(rows, 1, qh * d)
            else:  # reading a prompt or an observation: the fused kernel is ~5x faster on CPU
                # (SDPA reads transposed keys 4x slower than a row-major copy of them)
                out = F.scaled_dot_product_attention(
                    qs, keys_t.transpose(-1, -2).contiguous(), values, attn_mask=bias,
                    scale=self.scaling, enable_gqa=True)
                out = out.transpose(1, 2).reshape(rows, nq, qh * d)
            x = x + _linear(out, w.o)
            gate, up = _linear(F.rms_norm(x, hidden, w.norm2, self.eps), w.gate_up).chunk(2, -1)
            x = x + _linear(w.act(gate) * up, w.down)
        return _linear(F.rms_norm(x[:, -1], hidden, self.norm, self.eps), self.head).float()


def attention_bias(held: torch.Tensor, start: int, q: int) -> torch.Tensor:
    """(rows, 1, q, start + q) additive mask of a block of ``q`` new tokens at ``start``.

    ``held`` (rows, columns) is 0 at the key columns a row holds and the dtype's most negative
    finite value elsewhere (not -inf, so a padding query with nothing to attend to gets finite
    garbage, never NaN that could leak into real rows); within the block, causal.
    """
    end = start + q
    bias = held[:, None, None, :end]
    if q == 1:
        return bias
    col = torch.arange(end, device=held.device)
    future = col[None, :] > (start + torch.arange(q, device=held.device))[:, None]
    return bias.expand(-1, -1, q, -1).masked_fill(future, torch.finfo(held.dtype).min)


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
        self._store: dict[tuple[int, ...], Cached] = {}
        self._store_lengths: list[int] = []  # longest first
        self._store_ends: set[tuple[int, int]] = set()  # (length, last token) of each key
        self._weights_version: tuple[int, ...] = ()
        self.stats = {"prompt_tokens": 0, "reused_tokens": 0, "forward_calls": 0}

    # -- public ------------------------------------------------------------------------------
    def __call__(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        version = tuple(p._version for p in self.model.parameters())
        if version != self._weights_version:  # an optimiser step: cached keys are stale
            self.reset()
            self.runner.refresh()
            self._weights_version = version
        store: dict[tuple[int, ...], Cached] = {}
        out: list[Generation] = []
        for i in range(0, len(requests), self.max_batch_size):
            out.extend(self._batch(requests[i : i + self.max_batch_size], store))
        self._store = store  # entries live for one call: the next turn's prefixes
        self._store_lengths = sorted({len(k) for k in store}, reverse=True)
        self._store_ends = {(len(k), k[-1]) for k in store}
        return out

    def reset(self) -> None:
        """Forget every cached prefix."""
        self._store = {}
        self._store_lengths = []
        self._store_ends = set()

    # -- helpers ------------------------------------------------------------------------------
    def _piece(self, tok: int) -> str:
        piece = self._piece_cache.get(tok)
        if piece is None:
            piece = self.tokenizer.decode([tok], skip_special_tokens=False)
            self._piece_cache[tok] = piece
        return piece

    def _lookup(self, prompt: tuple[int, ...]) -> tuple[int, Cached | None]:
        """The longest cached strict prefix of ``prompt`` (at least one token must be new)."""
        if not self.reuse_prefix:
            return 0, None
        for n in self._store_lengths:
            # (length, last token) first: most lengths are ruled out without slicing the prompt
            if n < len(prompt) and (n, prompt[n - 1]) in self._store_ends:
                kv = self._store.get(prompt[:n])
                if kv is not None:
                    return n, kv
        return 0, None

    def _step_done(self, row: _Row, tok: int, logp: float) -> None:
        """Append one token; set ``row.finish`` when it ends the turn (as HFGenerator._cut).

        A stop string not in the text before this token can only end inside the new piece,
        so the window is searched only when the piece holds a stop string's last character.
        """
        row.tokens.append(tok)
        row.logps.append(logp)
        if tok in self.eos_ids:
            row.finish = "eos"
            return
        piece = self._piece(tok)
        row.text += piece
        if any(s[-1:] in piece and s in row.text[-(len(s) + 32) :] for s in row.req.stop):
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
        found = {p: self._lookup(p) for p in uniq}
        fresh = [p for p in uniq if found[p][1] is None]
        if self.reuse_prefix and len(fresh) > 1:  # e.g. the instructions of turn-1 prompts
            shared = min(len(os.path.commonprefix(fresh)), min(len(p) for p in fresh) - 1)
            if shared >= MIN_SHARED_PREFIX:
                cached = self._read_shared(fresh[0][:shared], device, dtype)
                found.update((p, (shared, cached)) for p in fresh)
        # rows sorted by how many new tokens they read: buckets of similar lengths (below)
        prompts = sorted(uniq, key=lambda p: len(p) - found[p][0])
        hits = [found[p] for p in prompts]
        past = [n for n, _ in hits]
        suffix = [p[n:] for p, n in zip(prompts, past, strict=True)]
        P, W = max(past), max(len(s) for s in suffix)
        max_new = max(r.max_tokens for r in requests)
        columns = P + W + max_new
        self.runner.reserve(max(len(p) for p in prompts) + max_new)
        K, V = self.runner.new_kv(len(prompts), columns, device, dtype)
        # additive attention bias per key column: 0 where the row holds it, else masked
        for r, (n, cached) in enumerate(hits):
            if cached is not None:  # the cached prefix, right-aligned in columns [0, P)
                src_k, src_v, b, spans = cached
                c = P - n
                for a0, a1 in spans:
                    K[:, r, :, :, c : c + a1 - a0] = src_k[:, b, :, :, a0:a1]
                    V[:, r, :, c : c + a1 - a0] = src_v[:, b, :, a0:a1]
                    c += a1 - a0
        # suffixes right-aligned in columns [P, P + W); a row holds [P - n, P) and its suffix
        ids = torch.tensor([[self.pad_id] * (W - len(s)) + list(s) for s in suffix])
        pos = torch.tensor([[0] * (W - len(s)) + list(range(n, n + len(s)))
                            for n, s in zip(past, suffix, strict=True)])
        cols = torch.arange(columns)
        lo = P - torch.tensor(past)[:, None]
        mid = P + W - torch.tensor([len(s) for s in suffix])[:, None]
        holds = ((cols >= lo) & (cols < P)) | ((cols >= mid) & (cols < P + W))
        held = torch.zeros((len(prompts), columns), dtype=dtype).masked_fill_(
            ~holds, torch.finfo(dtype).min)
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self.stats["reused_tokens"] += sum(past)
        held = held.to(device)
        # Read the new tokens in up to PREFILL_BUCKETS row buckets, each padded only to its own
        # longest suffix (suffixes are right-aligned at column P + W, so a bucket whose longest
        # suffix is w starts at P + W - w): less padding to project and attend from.
        ids, pos = ids.to(device), pos.to(device)
        n = len(prompts)
        bounds = sorted({round(n * k / PREFILL_BUCKETS) for k in range(PREFILL_BUCKETS + 1)})
        logits = torch.cat([
            self._forward(ids[lo:hi, W - w :], pos[lo:hi, W - w :], K[:, lo:hi], V[:, lo:hi],
                          P + W - w, held[lo:hi])
            for lo, hi in zip(bounds, bounds[1:]) for w in [len(suffix[hi - 1])]])
        next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)

        owner = [r for r, p in enumerate(prompts) for _ in uniq[p]]
        active = [i for p in prompts for i in uniq[p]]  # request of each batch row
        # the columns each request's row holds before it generates: prefix, then suffix
        spans = {i: ((P - past[r], P), (P + W - len(suffix[r]), P + W))
                 for r, p in enumerate(prompts) for i in uniq[p]}
        if len(active) != len(prompts):
            sel = torch.tensor(owner, device=device)
            K, V, held, logits, next_pos = K[:, sel], V[:, sel], held[sel], logits[sel], \
                next_pos[sel]
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
                    (a0, a1), (s0, _) = spans[i]
                    store[tuple(row.req.prompt_ids) + tuple(row.tokens[:-1])] = (
                        K, V, b, ((a0, a1), (s0, col)))
            if not keep:
                break
            if 4 * len(keep) <= 3 * len(active):  # a quarter finished: shrink the batch
                sel = torch.tensor(keep, device=device)
                K, V, held, tok, next_pos = K[:, sel], V[:, sel], held[sel], tok[sel], \
                    next_pos[sel]
                active = [active[b] for b in keep]
            held[:, col] = 0.0
            logits = self._forward(tok.unsqueeze(-1), next_pos.unsqueeze(-1), K, V, col, held)
            next_pos = next_pos + 1
            col += 1
        return [self._result(row) for row in rows]

    def _read_shared(self, prefix: tuple[int, ...], device: torch.device, dtype: torch.dtype
                     ) -> Cached:
        """Keys/values of a prefix several prompts share, read once as a cached prefix."""
        K, V = self.runner.new_kv(1, len(prefix), device, dtype)
        self.runner.reserve(len(prefix))
        ids = torch.tensor([prefix], dtype=torch.long, device=device)
        pos = torch.arange(len(prefix), device=device)[None]
        held = torch.zeros((1, len(prefix)), dtype=dtype, device=device)
        self._forward(ids, pos, K, V, 0, held)
        return K, V, 0, ((0, len(prefix)),)

    def _forward(self, ids, pos, K, V, start, held) -> torch.Tensor:
        self.stats["forward_calls"] += 1
        return self.runner(ids, pos, K, V, start, attention_bias(held, start, ids.shape[1]))

    def _result(self, row: _Row) -> Generation:
        toks = row.tokens
        text_toks = toks[:-1] if row.finish == "eos" else toks
        text = self.tokenizer.decode(text_toks, skip_special_tokens=False)
        return Generation(toks, row.logps, text, row.finish or "length")
