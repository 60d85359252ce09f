"""Policy losses of the loss-level baselines, registered in verl and in :data:`calibadv.methods.registry.LOSSES`.

Every function has verl 0.9.1's ``PolicyLossFn`` signature, so verl's actor
(``verl/workers/utils/losses.py:ppo_loss``) and the local backend
(:func:`calibadv.train.policy.policy_loss`) call the same function through
``core_algos.get_policy_loss_fn(loss_mode)``. Each is verl's own clipped GRPO loss
(``compute_policy_loss_vanilla``) plus one extra term; the term's knobs travel in the actor
config as ``policy_loss.knobs`` (:class:`calibadv.train.loss_config.KnobbedPolicyLossConfig`).

Notation (docs/baselines.md): r = π_θ/π_old per token, Δ = log π_old − log π_θ = −log r.
SAPO and LLDS compare π_θ with π_old, so both terms are exactly 0 on the first optimiser step
of a rollout batch and act only from the second mini-batch on.

Normalisation under gradient accumulation: a term's mean is taken over its micro-batch (as the
official code does), then weighted by the micro-batch's share of the mini-batch's loss tokens
(``global_batch_info.batch_num_tokens``), so the micro-batch losses add up like verl's
token-mean policy loss. With one micro-batch per mini-batch the weight is 1.

torch and verl are imported inside the functions: importing this module (to validate a
preset while Snakemake parses the DAG) costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from calibadv.methods.registry import LOSSES, Knob

if TYPE_CHECKING:
    import torch

__all__ = [
    "SEARCH_SAPO", "LLDS", "LLDS_CALIBADV",
    "grpo_clip_loss", "grpo_plus_term", "register_term_loss", "knobs_of", "sapo_term",
    "llds_term", "turn_ids", "register_in_verl",
    "answer_mask_context", "current_answer_mask",
]

SEARCH_SAPO = "search_sapo"  # verl's own "sapo" is Soft Adaptive PO, another method
LLDS = "llds"
LLDS_CALIBADV = "llds_calibadv"


def knobs_of(config: Any, name: str) -> dict[str, Any]:
    """This loss' knobs from the actor config (validated, defaults filled in)."""
    policy_loss = config.get("policy_loss", None) if config is not None else None
    given = policy_loss.get("knobs", None) if policy_loss is not None else None
    if given is not None and not isinstance(given, Mapping):  # DictConfig is a Mapping too
        given = dict(given)
    return LOSSES.resolve(name, dict(given or {}), f"policy_loss[{name}]")


def _share(mask: torch.Tensor, config: Any) -> torch.Tensor | float:
    """This micro-batch's share of the mini-batch's loss tokens (1 without global batch info)."""
    info = getattr(config, "global_batch_info", None) or {}
    total = info.get("batch_num_tokens")
    if total is None:
        return 1.0
    return mask.sum() / total * info.get("dp_size", 1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _rollout_advantage(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's advantage at its first loss token (the GRPO Â_i when uncalibrated)."""
    first = mask.float().argmax(dim=1, keepdim=True)
    return advantages.gather(1, first).squeeze(1)


def sapo_term(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              response_mask: torch.Tensor, t: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SAPO's conditional KL: masked mean of −log r · 1[r ≤ t] over the loss tokens of rollouts
    with Â ≥ 0 (rollouts with Â < 0 leave numerator and denominator)."""
    import torch

    mask = response_mask.bool()
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    rows = (_rollout_advantage(advantages, mask) >= 0) & mask.any(dim=1)
    sel = (mask & rows[:, None]).float()
    low = (log_ratio.exp() <= t).float()
    term = _masked_mean(-log_ratio * low, sel)
    return term, {"frac_low": float(_masked_mean(low, sel).detach()), "rows": float(rows.float().mean())}


def turn_ids(mask: torch.Tensor) -> torch.Tensor:
    """1-based id of each maximal run of True along every row (0 outside runs): one run of loss
    tokens is one model turn, since observation tokens are masked out."""
    import torch

    m = mask.bool()
    prev = torch.zeros_like(m)
    prev[:, 1:] = m[:, :-1]
    starts = m & ~prev
    return torch.cumsum(starts.long(), dim=1) * m.long()


def llds_term(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              response_mask: torch.Tensor, *, lam: float, positive: str, gate: str,
              denominator: str, answer_mask: torch.Tensor | None = None,
              answer_lam: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ coeff · max(0, Δ) over the selected tokens / the chosen token count.

    ``positive``: ``ge`` (Â ≥ 0, official) or ``gt`` (Â > 0, CalibAdv's LLD). ``gate``: ``turn``
    (a run of selected tokens is active iff its unclamped Σ Δ > 0; official A-gate),
    ``response`` (the whole response, R-gate) or ``none``. ``denominator``: ``loss_tokens``
    (every loss token of the micro-batch, official) or ``selected`` (the selected tokens,
    CalibAdv's LLD). ``answer_mask`` with ``answer_lam``: LLDS-MA, answer tokens get
    coefficient min(answer_lam, lam).
    """
    import torch

    mask = response_mask.bool()
    delta = old_log_prob - log_prob
    sel = mask & ((advantages >= 0) if positive == "ge" else (advantages > 0))
    d_sel = (delta * sel).detach()
    if gate == "turn":
        ids = turn_ids(sel)
        sums = torch.zeros(ids.shape[0], int(ids.max().item()) + 1, dtype=delta.dtype, device=delta.device)
        sums.scatter_add_(1, ids, d_sel)
        active = (sums.gather(1, ids) > 0) & sel
    elif gate == "response":
        active = (d_sel.sum(dim=1, keepdim=True) > 0) & sel
    else:
        active = sel
    coeff = torch.full_like(delta, lam)
    if answer_mask is not None and answer_lam is not None:
        coeff = torch.where(answer_mask.bool(), torch.full_like(delta, min(answer_lam, lam)), coeff)
    penalty = coeff * torch.relu(delta) * active.float()  # relu: no gradient at Δ = 0 (r = 1)
    denom = (mask if denominator == "loss_tokens" else sel).sum().clamp(min=1)
    return penalty.sum() / denom, {
        "active_frac": float(_masked_mean(active.float(), sel.float()).detach()) if sel.any() else 0.0,
        "selected_frac": float(_masked_mean(sel.float(), mask.float()).detach()) if mask.any() else 0.0,
    }


def grpo_clip_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                   rollout_is_weights):
    """verl's own clipped GRPO/PPO loss (``compute_policy_loss_vanilla``): the base of every loss here."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

    return compute_policy_loss_vanilla(
        old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
        response_mask=response_mask, loss_agg_mode=loss_agg_mode, config=config,
        rollout_is_weights=rollout_is_weights,
    )


def grpo_plus_term(name: str, term: Callable[..., tuple[torch.Tensor, dict[str, float]]],
                   old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                   rollout_is_weights) -> tuple[torch.Tensor, dict[str, Any]]:
    """GRPO clip loss + ``term(knobs, old, new, adv, mask)``, the term weighted by this
    micro-batch's token share; the term's signals join verl's metrics as ``actor/<key>``."""
    knobs = knobs_of(config, name)
    pg_loss, metrics = grpo_clip_loss(old_log_prob, log_prob, advantages, response_mask,
                                      loss_agg_mode, config, rollout_is_weights)
    extra, signals = term(knobs, old_log_prob, log_prob, advantages, response_mask)
    metrics.update({f"actor/{k}": v for k, v in signals.items()})
    return pg_loss + extra * _share(response_mask.bool(), config), metrics


def _sapo(k, old, new, adv, mask):
    """w · SAPO's conditional KL."""
    term, info = sapo_term(old, new, adv, mask, k["t"])
    return k["w"] * term, {"sapo_kl": float(term.detach()), "sapo_low_frac": info["frac_low"]}


def _llds(k, old, new, adv, mask):
    """The official LLDS penalty (A- or R-gate, optional MA)."""
    answers = current_answer_mask() if k["mask_answer"] else None
    if k["mask_answer"] and answers is None:
        from calibadv.errors import ConfigError

        raise ConfigError("policy_loss[llds].knobs.mask_answer: this backend gives the loss no "
                          "answer-token mask (the local backend does; verl does not)")
    term, info = llds_term(old, new, adv, mask, lam=k["lam"], positive="ge", gate=k["gate"],
                           denominator="loss_tokens", answer_mask=answers, answer_lam=k["answer_lam"])
    return term, {"llds_loss": float(term.detach()), "llds_active_frac": info["active_frac"]}


def _lld_calibadv(k, old, new, adv, mask):
    """CalibAdv's LLD penalty."""
    term, info = llds_term(old, new, adv, mask, lam=k["lam"], positive="gt", gate="none",
                           denominator="selected")
    return term, {"llds_loss": float(term.detach()), "llds_active_frac": info["active_frac"]}


def register_term_loss(name: str, term: Callable[..., tuple[Any, dict[str, float]]],
                       knobs: Mapping[str, Knob], description: str) -> Callable[..., Any]:
    """Register ``GRPO clip loss + term`` under ``name`` as a verl ``PolicyLossFn``.

    ``term(knobs, old_log_prob, log_prob, advantages, response_mask)`` returns the weighted
    extra term (a scalar tensor) and its signals (name → float) for the metrics."""

    def loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
             config=None, rollout_is_weights=None):
        return grpo_plus_term(name, term, old_log_prob, log_prob, advantages, response_mask,
                              loss_agg_mode, config, rollout_is_weights)

    loss.__name__ = loss.__qualname__ = f"{name}_loss"
    loss.__doc__ = f"{description} ({term.__name__})."
    return LOSSES.register(name, knobs=knobs, description=description)(loss)


search_sapo_loss = register_term_loss(
    SEARCH_SAPO, _sapo,
    knobs={
        "t": Knob(float, 0.99, "ratio threshold: tokens with r <= t get the KL term (ours: sweep)",
                  min=0.0),
        "w": Knob(float, 0.1, "weight of the conditional KL term (ours: sweep)", min=0.0),
    },
    description="SAPO (Search Agent PO): GRPO + w · conditional KL on non-negative rollouts",
)

llds_loss = register_term_loss(
    LLDS, _llds,
    knobs={
        "lam": Knob(float, 0.2, "λ (official script: no_reduce_lambda = 0.2)", min=0.0),
        "gate": Knob(str, "turn", "turn = A-gate per model turn (official best); response = R-gate",
                     choices=("turn", "response")),
        "answer_lam": Knob(float, 0.0, "LLDS-MA β: answer tokens get min(β, λ) (needs mask_answer)",
                           min=0.0),
        "mask_answer": Knob(bool, False, "LLDS-MA: answer tokens get coefficient min(answer_lam, lam)"),
    },
    description="LLDS (official code): GRPO + λ · gated max(0, Δ) on Â ≥ 0 tokens / all loss tokens",
)

llds_calibadv_loss = register_term_loss(
    LLDS_CALIBADV, _lld_calibadv,
    knobs={"lam": Knob(float, 0.1, "λ (CalibAdv's code: 0.1, hard-coded)", min=0.0)},
    description="LLD as the CalibAdv authors ran it: Â > 0, no gate, / positive loss tokens",
)


# --------------------------------------------------------------------------- answer mask (MA)
_answer_mask: list[Any] = []


def current_answer_mask() -> torch.Tensor | None:
    """The answer-token mask the caller set with :func:`answer_mask_context` (local backend)."""
    return _answer_mask[-1] if _answer_mask else None


class answer_mask_context:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Hand LLDS-MA the answer tokens of the micro-batch being scored (same shape as the mask)."""

    def __init__(self, mask: torch.Tensor | None) -> None:
        self.mask = mask

    def __enter__(self) -> None:
        _answer_mask.append(self.mask)

    def __exit__(self, *exc: object) -> None:
        _answer_mask.pop()


# --------------------------------------------------------------------------- verl registration
def register_in_verl() -> None:
    """Put every loss of :data:`LOSSES` into verl's registry (idempotent). Never shadows one
    of verl's own losses; an entry someone else put under our name (a wrapper) is kept."""
    from verl.trainer.ppo import core_algos

    for name in LOSSES.names():
        current = core_algos.POLICY_LOSS_REGISTRY.get(name)
        if current is not None and current.__module__ == core_algos.__name__:
            raise RuntimeError(f"verl has its own policy loss {name!r}: rename ours")
        if current is None:
            core_algos.register_policy_loss(name)(LOSSES.get(name).fn)
