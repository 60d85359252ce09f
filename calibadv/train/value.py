"""The local backend's value model for PPO (the ``gae`` estimator, StepSearch): a small value
head on the policy's own last hidden states.

Ours, not verl's: verl's critic is a second full model (the actor's weights with a value
head, ``AutoModelForTokenClassification``) trained by its own optimiser. Locally the value
model is one linear layer on the policy's *detached* last hidden state, so it costs one
backbone forward per step and never pushes gradients into the policy; it starts at zero (V = 0
everywhere, GAE with γ = λ = 1 is then the reward-to-go). The value of response token t is read
at the position before it (the state the token is sampled from), as verl's critic does.

The loss is verl's own ``compute_value_loss`` (clipped as verl's critic: max of the squared
errors of the new value and of the old value moved by at most ``cliprange_value``, ×0.5,
token-mean), so the local critic and verl's share the formula. The head and its optimiser are
saved in the trainer state of every checkpoint (:mod:`calibadv.train.checkpoint`), so a
resumed run continues with the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calibadv.agent.types import Trajectory

__all__ = ["ValueHead", "hidden_states", "value_loss"]


@torch.no_grad()
def hidden_states(model: Any, trajs: Sequence[Trajectory], pad_id: int) -> torch.Tensor:
    """(B, R, H) last hidden states of the backbone at the position before each response token
    (the policy's state when it sampled that token); rows past a response's end are zeros."""
    from calibadv.train.policy import pad_batch

    device = next(model.parameters()).device
    ids, attn, resp_mask, plens = pad_batch(trajs, pad_id)
    backbone = getattr(model, model.base_model_prefix, model)
    hidden = backbone(input_ids=ids.to(device), attention_mask=attn.to(device),
                      use_cache=False).last_hidden_state.float()
    out = torch.zeros((len(trajs), resp_mask.shape[1], hidden.shape[-1]), device=device)
    for i, (p, t) in enumerate(zip(plens, trajs, strict=True)):
        n = len(t.response_ids)
        out[i, :n] = hidden[i, p - 1 : p - 1 + n]
    return out


class ValueHead(torch.nn.Module):
    """V(s_t) = w·h_t + b on the detached hidden state h_t, zero-initialised."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.detach()).squeeze(-1)


def value_loss(vpreds: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor,
               mask: torch.Tensor, cliprange_value: float, batch_num_tokens: int
               ) -> tuple[torch.Tensor, float]:
    """verl 0.9.1's clipped critic loss (``core_algos.compute_value_loss``, token-mean over the
    whole mini-batch's ``batch_num_tokens``, so micro-batch losses add up to it)."""
    from verl.trainer.ppo.core_algos import compute_value_loss

    loss, clipfrac = compute_value_loss(vpreds, returns, old_values, mask,
                                        cliprange_value=cliprange_value, loss_agg_mode="token-mean",
                                        dp_size=1, batch_num_tokens=batch_num_tokens,
                                        global_batch_size=int(mask.shape[0]), loss_scale_factor=None)
    return loss, float(clipfrac)


class Critic:
    """The value head and its AdamW optimiser: values of a batch, one PPO critic update."""

    def __init__(self, hidden_size: int, lr: float, cliprange_value: float, grad_clip: float,
                 device: Any) -> None:
        with torch.random.fork_rng(devices=[]):  # zero-initialised anyway: leave the run's RNG
            self.head = ValueHead(hidden_size).to(device)  # (and so its rollouts) untouched
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=0.0)
        self.cliprange_value, self.grad_clip = cliprange_value, grad_clip

    @torch.no_grad()
    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def update(self, hidden: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor,
               mask: torch.Tensor, mini_batches: Sequence[range]) -> dict[str, float]:
        """One optimiser step per mini-batch (the actor's), before the actor update as in verl."""
        losses, clipfracs, norms = [], [], []
        for mb in mini_batches:
            rows = slice(mb.start, mb.stop)
            m = mask[rows]
            if m.sum() == 0:
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss, clipfrac = value_loss(self.head(hidden[rows]), returns[rows], old_values[rows], m,
                                        self.cliprange_value, int(m.sum().item()))
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.head.parameters(), self.grad_clip)))
            self.optimizer.step()
            losses.append(float(loss.detach()))
            clipfracs.append(clipfrac)

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        return {"critic/vf_loss": mean(losses), "critic/vf_clipfrac": mean(clipfracs),
                "critic/grad_norm": mean(norms)}

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
