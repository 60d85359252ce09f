"""Policy log-probs and the PPO/GRPO loss, through verl's registered loss functions.

The loss itself is never re-implemented here: :func:`policy_loss` calls
``verl.trainer.ppo.core_algos.get_policy_loss_fn(loss_mode)`` and ``agg_loss`` exactly as
verl's actor does (``verl/workers/utils/losses.py:ppo_loss``), so a loss registered by a
plugin (a baseline) runs unchanged in the local backend.

Gradient accumulation: ``global_batch_info`` carries the token / rollout counts of the whole
mini-batch, so the micro-batch losses add up to the mini-batch loss whatever the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calibadv.agent.types import Trajectory


def actor_config(clip_ratio: float, loss: dict[str, Any]) -> Any:
    """A verl ActorConfig carrying what the policy-loss functions read."""
    import dataclasses

    from verl.workers.config import FSDPActorConfig

    from calibadv.errors import ConfigError
    from calibadv.methods.losses import register_in_verl
    from calibadv.train.loss_config import KnobbedPolicyLossConfig as PolicyLossConfig

    register_in_verl()  # our losses, even where verl's plugin entry point is not installed
    loss = dict(loss or {})
    pl_fields = {f.name for f in dataclasses.fields(PolicyLossConfig)}
    actor_fields = {f.name for f in dataclasses.fields(FSDPActorConfig)}
    pl_kwargs = {"loss_mode": loss.pop("loss_mode", "vanilla"), "knobs": dict(loss.pop("knobs", None) or {})}
    actor_kwargs = {"loss_agg_mode": loss.pop("loss_agg_mode", "token-mean")}
    for key, value in loss.items():  # extra knobs of a registered loss (e.g. a baseline's)
        if key in pl_fields:
            pl_kwargs[key] = value
        elif key in actor_fields:
            actor_kwargs[key] = value
        else:
            raise ConfigError(f"method.loss.{key}: not a verl actor/policy-loss option")
    cfg = FSDPActorConfig(
        strategy="fsdp",
        ppo_mini_batch_size=1,
        ppo_micro_batch_size_per_gpu=1,
        rollout_n=1,
        clip_ratio=clip_ratio,
        policy_loss=PolicyLossConfig(**pl_kwargs),
        **actor_kwargs,
    )
    return cfg


def pad_batch(
    trajs: Sequence[Trajectory], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Right-padded prompt+response ids, attention mask, response mask (B, R), prompt lengths."""
    seqs = [t.prompt_ids + t.response_ids for t in trajs]
    width = max(len(s) for s in seqs)
    r_width = max(1, max(len(t.response_ids) for t in trajs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    resp_mask = torch.zeros((len(seqs), r_width), dtype=torch.float32)
    for i, (s, t) in enumerate(zip(seqs, trajs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        resp_mask[i, : len(t.loss_mask)] = torch.tensor(t.loss_mask, dtype=torch.float32)
    return ids, attn, resp_mask, [len(t.prompt_ids) for t in trajs]


#: model types whose logits are exactly ``lm_head(final hidden state)`` (no soft-capping or
#: logit scale), so the head can be applied to the loss positions alone
PLAIN_HEAD_MODELS = ("qwen2", "qwen3", "llama", "mistral")


def loss_positions(trajs: Sequence[Trajectory]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column in prompt+response, response slot) of every generated (loss_mask = 1) token.

    The log-prob of response token k of row i is read from the logits at column
    ``len(prompt_i) - 1 + k``, the position that predicts it.
    """
    rows, slots = [], []
    for i, t in enumerate(trajs):
        ks = [k for k, m in enumerate(t.loss_mask[: len(t.response_ids)]) if m]
        rows += [i] * len(ks)
        slots += ks
    plens = torch.tensor([len(t.prompt_ids) for t in trajs], dtype=torch.long)
    r, k = torch.tensor(rows, dtype=torch.long), torch.tensor(slots, dtype=torch.long)
    return r, plens[r] - 1 + k, k


def response_logprobs(
    model: Any,
    trajs: Sequence[Trajectory],
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    all_positions: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Log-probs (B, R) of the response tokens (logits / temperature, as verl's actor does).

    Only the generated tokens (``loss_mask = 1``) get values; observation tokens and padding
    are 0 (every loss reads the log-probs through the mask). The vocabulary projection and the
    log-softmax, most of the cost at ~1M parameters (a 3,840-token vocabulary against a
    132-wide model), then run on those positions alone: the same numbers at those positions as
    the full computation, which ``all_positions=True`` still does (values at every response
    position, observation tokens included; the reference the tests compare against).
    ``entropy_grad=False`` computes the entropy outside autograd: a logged signal, when the
    loss has no entropy term, needs no graph.
    """
    device = next(model.parameters()).device
    ids, attn, resp_mask, plens = pad_batch(trajs, pad_id)
    ids, attn = ids.to(device), attn.to(device)
    B, width = resp_mask.shape
    if all_positions:
        rows = torch.tensor([i for i, t in enumerate(trajs) for _ in t.response_ids],
                            dtype=torch.long)
        slots = torch.tensor([k for t in trajs for k in range(len(t.response_ids))],
                             dtype=torch.long)
        cols = torch.tensor(plens, dtype=torch.long)[rows] - 1 + slots
    else:
        rows, cols, slots = loss_positions(trajs)
    rows, cols, slots = rows.to(device), cols.to(device), slots.to(device)
    if not all_positions and getattr(model.config, "model_type", None) in PLAIN_HEAD_MODELS:
        # right padding under causal attention: no real position sees the padding, so the
        # padding mask (and the masked attention kernel, ~20% of the forward) is not needed
        hidden = model.get_decoder()(input_ids=ids, use_cache=False)
        logits = model.get_output_embeddings()(hidden.last_hidden_state[rows, cols])
    else:  # the model's own forward (whatever its head does), read at the positions
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[rows, cols]
    logp_all = torch.log_softmax(logits.float() / max(temperature, 1e-6), dim=-1)
    token_logp = logp_all.gather(-1, ids[rows, cols + 1].unsqueeze(-1)).squeeze(-1)
    out = torch.zeros((B, width), device=device).index_put((rows, slots), token_logp)
    ent = None
    if with_entropy:
        # a signal unless the loss has an entropy term: then no autograd graph for it
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            ent = torch.zeros((B, width), device=device).index_put(
                (rows, slots), -(logp_all.exp() * logp_all).sum(-1))
    return out, ent, resp_mask.to(device)


#: what verl's clipped loss reports for every loss; anything else a loss returns is its own
_VANILLA_METRICS = {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"}


def policy_loss(
    cfg: Any,
    old_logp: torch.Tensor,
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    batch_num_tokens: int,
    global_batch_size: int,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "low_var_kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's registered policy loss (+ entropy bonus, + KL to the reference) for a micro-batch."""
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty

    cfg.global_batch_info.update(
        dp_size=1,
        batch_num_tokens=batch_num_tokens,
        global_batch_size=global_batch_size,
        loss_scale_factor=cfg.loss_scale_factor,
    )
    mask_b = mask.bool()
    fn = get_policy_loss_fn(cfg.policy_loss.loss_mode)
    pg_loss, pg_metrics = fn(
        old_log_prob=old_logp,
        log_prob=logp,
        advantages=advantages,
        response_mask=mask_b,
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
        rollout_is_weights=None,
    )
    total = pg_loss
    metrics = {"pg_loss": float(pg_loss.detach()),
               "pg_clipfrac": float(pg_metrics.get("actor/pg_clipfrac", 0.0))}
    for key, value in pg_metrics.items():  # a registered loss' own signals (sapo_kl, …)
        if key.startswith("actor/") and key not in _VANILLA_METRICS:
            metrics[key.removeprefix("actor/")] = float(value)
    if entropy is not None and entropy_coef:
        ent = agg_loss(entropy, mask_b, cfg.loss_agg_mode, **cfg.global_batch_info)
        total = total - entropy_coef * ent
    if ref_logp is not None and kl_coef:
        kld = kl_penalty(logp, ref_logp, kl_type)
        kl = agg_loss(kld, mask_b, cfg.loss_agg_mode, **cfg.global_batch_info)
        total = total + kl_coef * kl
        metrics["kl_loss"] = float(kl.detach())
    return total, metrics


#: LLDS-MA looks for the answer in the last this-many response tokens (official code: 50).
ANSWER_WINDOW = 50


def answer_token_mask(trajs: Sequence[Trajectory], tok: Any, width: int) -> torch.Tensor:
    """(B, width) mask of each rollout's last ``<answer>…`` span among its final
    :data:`ANSWER_WINDOW` response tokens (LLDS-MA's answer tokens; 0 where there is none)."""
    opener = tok.encode("<answer>", add_special_tokens=False)
    out = torch.zeros((len(trajs), width), dtype=torch.bool)
    n = len(opener)
    for i, t in enumerate(trajs):
        ids = t.response_ids
        lo = max(0, len(ids) - ANSWER_WINDOW)
        starts = [s for s in range(lo, len(ids) - n + 1) if ids[s : s + n] == opener]
        if starts and n:
            out[i, starts[-1] : min(len(ids), width)] = True
    return out
