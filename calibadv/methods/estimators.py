"""Advantage estimators, registered in :data:`calibadv.methods.registry.ESTIMATORS`.

An estimator turns one batch of scored rollouts into token advantages (batch, length). Both
training backends build the same :class:`EstimatorBatch` (the local backend from its
Trajectories, verl from the agent loop's ``extra_fields``) and call :func:`estimate` with the
preset's ``estimator.name`` and knobs, so one name means one function everywhere.

Registered here:

- ``calibadv`` (default): :func:`calibadv.methods.advantage.calibrate`, exactly as before the registry
  (GRPO when the calibration switches are off, as in ``search-r1``);
- ``grpo``: plain :func:`calibadv.methods.advantage.grpo_advantage`;
- ``gigpo``: GiGPO (episode + step-group advantages, :func:`gigpo_advantage`);
- ``mt_grpo``: MT-GRPO as in its official code (:func:`mt_grpo_advantage`);
- ``tree_grpo``: Tree-GRPO (prompt + tree z-scores, :func:`tree_grpo_advantage`), for rollouts
  of the ``tree`` rollout shape;
- ``gae``: PPO's GAE on token rewards (the preset's ``reward`` part, :mod:`calibadv.methods.token_rewards`)
  minus a KL penalty, with a value model's values (:func:`gae`); it ``needs`` values, which
  the backend provides (a value head locally, :mod:`calibadv.train.value`; verl's critic).

The formulas and where each default comes from are in docs/baselines.md. torch is imported
inside the functions: the workflow validates presets without it.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calibadv.agent.protocol import INVALID_ACTION_MESSAGE
from calibadv.methods.registry import ESTIMATORS, Knob

__all__ = [
    "EstimatorBatch",
    "estimate",
    "observations",
    "step_anchors",
    "step_groups",
    "is_void_step",
    "gigpo_advantage",
    "mt_grpo_advantage",
    "contains_gold",
    "answer_matches",
    "tree_grpo_advantage",
    "gae",
]

_INFO_RE = re.compile(r"<information>(.*?)</information>", re.DOTALL)


@dataclass
class EstimatorBatch:
    """One training batch as every estimator sees it.

    ``rollouts[i]`` is a mapping with the rollout's ``turn_spans``, ``doc_ids``, ``thinks``,
    ``queries``, ``stop_reason``, ``response_text``, ``answer``, ``golden_answers``,
    ``format_ok`` and, for tree rollouts, ``tree`` (the tree id within its prompt)."""

    scores: Any  # (batch,) float tensor
    response_mask: Any  # (batch, length)
    groups: list[Any]  # one prompt id per rollout
    rollouts: Sequence[Mapping[str, Any]]
    calib: Any  # calibadv.methods.advantage.CalibConfig
    # what an estimator that ``needs`` values reads (None otherwise): the value model's values,
    # the old and reference log-probs (batch, length), and the preset's token reward part
    values: Any = None
    old_logp: Any = None
    ref_logp: Any = None
    reward: tuple[str, Mapping[str, Any]] = ("task", {})


def estimate(name: str, knobs: Mapping[str, Any] | None, batch: EstimatorBatch) -> tuple[Any, dict[str, Any]]:
    """Run estimator ``name`` with its (validated) knobs on ``batch``: (advantages, stats)."""
    part = ESTIMATORS.get(name, "estimator.name")
    checked = ESTIMATORS.resolve(name, knobs, "estimator")
    return part.fn(batch, **checked)


# --------------------------------------------------------------------------- GRPO / CalibAdv
@ESTIMATORS.register("calibadv", description="CalibAdv calibration of GRPO (calibration switches)",
                     reads_calibration=True)
def _calibadv(batch: EstimatorBatch) -> tuple[Any, dict[str, Any]]:
    import torch

    from calibadv.methods.advantage import calibrate

    rs = batch.rollouts
    return calibrate(
        batch.scores,
        torch.tensor([bool(r["format_ok"]) for r in rs], dtype=torch.bool),
        batch.response_mask,
        batch.groups,
        [[[int(x) for x in s] for s in r["turn_spans"]] for r in rs],
        [[[str(d) for d in step] for step in r["doc_ids"]] for r in rs],
        [[str(t) for t in r["thinks"]] for r in rs],
        batch.calib,
        # score: judge — the judge's c per step (None: a rollout the judge was not asked about)
        judge_scores=[r.get("judge_scores") for r in rs] if batch.calib.score == "judge" else None,
    )


@ESTIMATORS.register("grpo", description="GRPO: the group z-score of the rollout reward")
def _grpo(batch: EstimatorBatch) -> tuple[Any, dict[str, Any]]:
    from calibadv.methods.advantage import _rollout_advantage

    adv, _, _ = _rollout_advantage(batch.scores, batch.groups, batch.calib.norm_by_std, batch.calib.eps)
    return adv.unsqueeze(-1) * batch.response_mask, {"rollout_advantage": adv.tolist()}


# --------------------------------------------------------------------------- helpers
def observations(rollout: Mapping[str, Any]) -> list[str]:
    """The observation text that follows each non-final turn of a rollout.

    A turn with a query was a search: its observation is the next ``<information>`` block of
    the response text. A turn without one was an invalid action: its observation (when the
    rollout went on) is the protocol's invalid-action message."""
    infos = _INFO_RE.findall(rollout.get("response_text") or "")
    out, k = [], 0
    for q in rollout.get("queries") or []:
        if q:
            out.append(infos[k] if k < len(infos) else "")
            k += 1
        else:
            out.append(INVALID_ACTION_MESSAGE)
    return out


def step_anchors(rollout: Mapping[str, Any]) -> list[str]:
    """Per turn, the latest observation the policy saw before it (the prompt → "")."""
    obs = observations(rollout)
    n = len(rollout.get("turn_spans") or [])
    return ["" if t == 0 else obs[t - 1] if t - 1 < len(obs) else "" for t in range(n)]


def _similar(a: str, b: str, threshold: float | None) -> bool:
    if a == b:
        return True
    return threshold is not None and difflib.SequenceMatcher(None, a, b).ratio() >= threshold


def step_groups(anchors: Sequence[str], threshold: float | None) -> list[int]:
    """Greedy clustering of step anchors: each joins the first cluster whose first member is
    equal (``threshold`` None) or difflib-similar (ratio >= threshold), else starts one."""
    reps: list[str] = []
    out = []
    for a in anchors:
        for c, rep in enumerate(reps):
            if _similar(a, rep, threshold):
                out.append(c)
                break
        else:
            out.append(len(reps))
            reps.append(a)
    return out


def _paint(adv_rows: Any, spans: Sequence[Sequence[Sequence[int]]], values: Sequence[Sequence[float]]) -> None:
    """Write ``values[i][t]`` over the tokens of turn t of row i (clipped to the width)."""
    width = adv_rows.shape[1]
    for i, (row_spans, row_vals) in enumerate(zip(spans, values)):
        for (start, end), v in zip(row_spans, row_vals):
            start, end = min(int(start), width), min(int(end), width)
            if end > start:
                adv_rows[i, start:end] = v


# --------------------------------------------------------------------------- GiGPO
def _discounted(rewards: Sequence[float], gamma: float) -> list[float]:
    """G_t = Σ_k γ^k r_{t+k}, going backwards (verl-agent ``compute_step_discounted_returns``)."""
    g, out = 0.0, []
    for r in reversed(list(rewards)):
        g = float(r) + gamma * g
        out.append(g)
    return out[::-1]


def _norm_rows(values: Sequence[float], labels: Sequence[Any], norm: bool, eps: float,
               single_mean: bool) -> list[float]:
    """Each value centred on its label group's mean (÷ (unbiased std + eps) when ``norm``).

    A group of one has std 1 and mean 0 (``single_mean`` False: verl-agent's
    ``episode_norm_reward``) or its own value (True: ``step_norm_reward``, so A^S = 0)."""
    import torch

    by: dict[Any, list[int]] = {}
    for k, lab in enumerate(labels):
        by.setdefault(lab, []).append(k)
    out = [0.0] * len(values)
    for rows in by.values():
        vals = torch.tensor([float(values[k]) for k in rows], dtype=torch.float32)
        if len(rows) == 1:
            mean = vals.mean() if single_mean else torch.tensor(0.0)
            std = torch.tensor(1.0)
        else:
            mean, std = vals.mean(), vals.std()
        centred = vals - mean
        if norm:
            centred = centred / (std + eps)
        for k, v in zip(rows, centred.tolist()):
            out[k] = v
    return out


def gigpo_advantage(
    scores: Any,
    response_mask: Any,
    group_index: Sequence[Any],
    turn_spans: Sequence[Sequence[Sequence[int]]],
    step_rewards: Sequence[Sequence[float]],
    anchors: Sequence[Sequence[str]],
    gamma: float = 0.95,
    omega: float = 1.0,
    similarity: float | None = 0.9,
    mode: str = "mean_std_norm",
    eps: float = 1e-6,
    invalid: Sequence[Sequence[bool]] | None = None,
    invalid_penalty: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    """GiGPO as verl-agent computes it: tokens of turn t of rollout i get A^E_{i,t} + ω·A^S_{i,t}.

    verl-agent trains one row per step, so both terms are computed over step rows
    (``gigpo/core_gigpo.py``):

    - the episode score of row (i, t) is R_i − p·[turn t invalid] (the reward manager writes
      R_i on every step row; ``apply_invalid_action_penalty`` then subtracts p from that row);
      A^E normalises it over *every step row* of the prompt's group
      (``episode_norm_reward`` with ``compute_mean_std_cross_steps=True``), so a rollout with
      more steps weighs more in the mean and std; a prompt with one row gets mean 0, std 1;
    - A^S: the discounted return G_{i,t} = Σ_k γ^k r_{i,t+k} of the environment's step rewards
      ``step_rewards`` (R_i on the last step), minus p for an invalid turn *after* discounting
      (the penalty is applied to ``step_rewards`` = the returns), normalised within its step
      group (same prompt, anchors equal or difflib ratio ≥ ``similarity``); a step alone in its
      group gets A^S = 0.

    ``mean_std_norm`` divides by (unbiased std + eps); ``mean_norm`` only centres."""
    import torch

    norm = mode == "mean_std_norm"
    score_list = [float(x) for x in torch.as_tensor(scores).reshape(-1).tolist()]
    flags = invalid or [[False] * len(r) for r in step_rewards]
    pen = [[invalid_penalty * float(bool(f)) for f in row] for row in flags]
    rows = [(i, t) for i in range(len(step_rewards)) for t in range(len(step_rewards[i]))]
    returns = [_discounted(r, gamma) for r in step_rewards]
    ep_vals = [score_list[i] - pen[i][t] for i, t in rows]
    ep_adv = _norm_rows(ep_vals, [group_index[i] for i, _ in rows], norm, eps, single_mean=False)
    # step groups: per prompt, greedy clustering of its rows' anchors
    by_prompt: dict[Any, list[int]] = {}
    for k, (i, _) in enumerate(rows):
        by_prompt.setdefault(group_index[i], []).append(k)
    labels: list[Any] = [None] * len(rows)
    for g, ks in by_prompt.items():
        for k, c in zip(ks, step_groups([anchors[rows[k][0]][rows[k][1]] for k in ks], similarity)):
            labels[k] = (g, c)
    step_vals = [returns[i][t] - pen[i][t] for i, t in rows]
    st_adv = _norm_rows(step_vals, labels, norm, eps, single_mean=True)
    values = [[0.0] * len(r) for r in step_rewards]
    a_e = [[0.0] * len(r) for r in step_rewards]
    for k, (i, t) in enumerate(rows):
        values[i][t] = ep_adv[k] + omega * st_adv[k]
        a_e[i][t] = ep_adv[k]
    adv = torch.zeros(response_mask.shape, dtype=torch.float32)
    _paint(adv, turn_spans, values)
    sizes = list(Counter(labels).values())
    n_groups = len(sizes)
    stats = {
        # per rollout: its last step's A^E (the row that carries the final reward)
        "rollout_advantage": [row[-1] if row else 0.0 for row in a_e],
        "gigpo_step_groups": float(n_groups),
        "gigpo_singleton_frac": sum(s == 1 for s in sizes) / n_groups if n_groups else 0.0,
        "gigpo_steps_per_group": len(rows) / n_groups if n_groups else 0.0,
    }
    return adv.to(response_mask.device) * response_mask, stats


def is_void_step(rollout: Mapping[str, Any], t: int) -> bool:
    """A non-final turn with no valid search, or a final turn with neither search nor answer."""
    queries = rollout.get("queries") or []
    n = len(rollout.get("turn_spans") or [])
    if t >= len(queries) or queries[t]:
        return False
    last = t == n - 1
    return not (last and rollout.get("stop_reason") in ("max_turns", "length"))


@ESTIMATORS.register(
    "gigpo",
    knobs={
        "gamma": Knob(float, 0.95, "discount of the step return (search script: 0.95)", min=0.0, max=1.0),
        "omega": Knob(float, 1.0, "weight of the step advantage (search script: 1)", min=0.0),
        "mode": Knob(str, "mean_std_norm", "mean_std_norm: z-score (search script); mean_norm: "
                     "mean only (verl-agent's config default)", choices=("mean_std_norm", "mean_norm")),
        "similarity": Knob(float, 0.9, "difflib ratio at which two anchor observations match "
                           "(search script 0.9); 1.0 = exact match only", min=0.0, max=1.0),
        "invalid_penalty": Knob(float, 0.01, "subtracted from a void step's return and episode "
                                "score, after discounting (search script 0.01)", min=0.0),
        "eps": Knob(float, 1e-6, "added to the std (core_gigpo.py epsilon, 1e-6)", min=0.0),
    },
    description="GiGPO: episode advantage + step-group advantage of discounted returns",
)
def _gigpo(batch: EstimatorBatch, gamma: float, omega: float, mode: str, similarity: float,
           invalid_penalty: float, eps: float) -> tuple[Any, dict[str, Any]]:
    """The environment's step rewards are 0 except R_i on the last step (verl-agent's search
    env); void turns are the invalid actions penalised after discounting."""
    rs = batch.rollouts
    scores = batch.scores.tolist()
    spans, rewards, anchors, invalid = [], [], [], []
    for i, r in enumerate(rs):
        n = len(r["turn_spans"])
        step_r = [0.0] * n
        if n:
            step_r[-1] = float(scores[i])
        spans.append(r["turn_spans"])
        rewards.append(step_r)
        anchors.append(step_anchors(r))
        invalid.append([is_void_step(r, t) for t in range(n)])
    return gigpo_advantage(batch.scores, batch.response_mask, batch.groups, spans, rewards, anchors,
                           gamma=gamma, omega=omega, similarity=None if similarity >= 1.0 else similarity,
                           mode=mode, eps=eps, invalid=invalid,
                           invalid_penalty=invalid_penalty)


# --------------------------------------------------------------------------- MT-GRPO
def mt_grpo_advantage(
    turn_rewards: Sequence[float],
    outcome_rewards: Sequence[float],
    has_tool_result: Sequence[bool],
    first_turn_end: Sequence[int],
    response_mask: Any,
    group_index: Sequence[Any],
    lam: float = 1.0,
    eps: float = 1e-4,
) -> tuple[Any, dict[str, Any]]:
    """MT-GRPO (official code): A^T, A^O = group z-scores of the turn and outcome rewards;
    a rollout with a tool result gets A^O + λ·A^T on tokens before ``first_turn_end`` (its first
    turn) and A^O after; a rollout without one gets z(R^T + R^O) on every token."""
    import torch

    from calibadv.methods.advantage import _rollout_advantage

    rt = torch.tensor([float(x) for x in turn_rewards], dtype=torch.float32)
    ro = torch.tensor([float(x) for x in outcome_rewards], dtype=torch.float32)
    a_t = _rollout_advantage(rt, group_index, True, eps)[0]
    a_o = _rollout_advantage(ro, group_index, True, eps)[0]
    a_all = _rollout_advantage(rt + ro, group_index, True, eps)[0]
    batch, width = response_mask.shape
    adv = torch.zeros(batch, width, dtype=torch.float32)
    for i in range(batch):
        if has_tool_result[i]:
            adv[i] = a_o[i]
            adv[i, : min(int(first_turn_end[i]), width)] += lam * a_t[i]
        else:
            adv[i] = a_all[i]
    stats = {
        "rollout_advantage": a_o.tolist(),
        "mt_turn_reward_mean": float(rt.mean()) if batch else 0.0,
        "mt_outcome_reward_mean": float(ro.mean()) if batch else 0.0,
        "mt_tool_frac": sum(map(bool, has_tool_result)) / batch if batch else 0.0,
    }
    return adv.to(response_mask.device) * response_mask, stats


def contains_gold(text: str | None, golds: Sequence[str], matching: str = "official") -> bool:
    """A gold answer inside ``text``. ``official``: the raw lower-cased substring test of
    MT-GRPO's ``triviaqa_rubric.py`` (L50-57 for the answer, L137-144 for the search result: no
    stripping of articles or punctuation); ``squad``: both SQuAD-normalised first."""
    if text is None:
        return False
    if matching == "official":
        low = str(text).lower()
        return any(str(g).lower() in low for g in golds)
    from calibadv.answer_score import normalize_answer

    norm = normalize_answer(text)
    return any(normalize_answer(g) and normalize_answer(g) in norm for g in golds)


def answer_matches(answer: str | None, golds: Sequence[str], matching: str = "official") -> float:
    """1.0 when the answer equals a gold answer. ``official``: lower-case and strip, then string
    equality (``triviaqa_rubric.py`` L63-85: "The Beatles" ≠ "Beatles"); ``squad``: SQuAD EM."""
    if answer is None:
        return 0.0
    if matching == "official":
        low = str(answer).lower().strip()
        return float(any(str(g).lower().strip() == low for g in golds))
    from calibadv.answer_score import exact_match

    return exact_match(answer, golds)


@ESTIMATORS.register(
    "mt_grpo",
    knobs={
        "lam": Knob(float, 1.0, "weight of the turn advantage on first-turn tokens "
                    "(turn_advantage_coef, official 1)", min=0.0),
        "tool_weight": Knob(float, 0.2, "turn reward per successful first-turn tool call "
                            "(official 0.2)", min=0.0),
        "retrieval_weight": Knob(float, 0.5, "turn reward when a gold answer is in the first "
                                 "observation (official 0.5)", min=0.0),
        "outcome": Knob(str, "official", "official: 0.5·[gold in answer] + EM + format; task: "
                        "the run's own reward (gated F1)", choices=("official", "task")),
        "matching": Knob(str, "official", "official: triviaqa_rubric's lower-case substring and "
                         "lower/strip equality; squad: SQuAD-normalised (articles, punctuation "
                         "dropped)", choices=("official", "squad")),
        "eps": Knob(float, 1e-4, "added to the group std (official 1e-4)", min=0.0),
    },
    description="MT-GRPO: first-turn tokens get the outcome + turn advantage",
)
def _mt_grpo(batch: EstimatorBatch, lam: float, tool_weight: float, retrieval_weight: float,
             outcome: str, matching: str, eps: float) -> tuple[Any, dict[str, Any]]:
    scores = batch.scores.tolist()
    r_turn, r_out, has_tool, first_end = [], [], [], []
    for i, r in enumerate(batch.rollouts):
        obs = observations(r)
        queries = r.get("queries") or []
        tool = bool(queries) and bool(queries[0]) and bool(r["doc_ids"][0]) and bool(obs[0])
        golds = r.get("golden_answers") or []
        r_turn.append(tool_weight * float(tool)
                      + retrieval_weight * float(tool and contains_gold(obs[0], golds, matching)))
        if outcome == "task":
            r_out.append(float(scores[i]))
        else:
            answer = r.get("answer") or None  # no answer: the rubric's None → 0
            r_out.append(0.5 * float(contains_gold(answer, golds, matching))
                         + answer_matches(answer, golds, matching) + float(bool(r["format_ok"])))
        has_tool.append(tool)
        spans = r["turn_spans"]
        first_end.append(int(spans[0][1]) if spans else 0)
    return mt_grpo_advantage(r_turn, r_out, has_tool, first_end, batch.response_mask, batch.groups,
                             lam=lam, eps=eps)


# --------------------------------------------------------------------------- Tree-GRPO
def tree_grpo_advantage(scores: Any, response_mask: Any, group_index: Sequence[Any],
                        tree_index: Sequence[Any], eps: float = 1e-6) -> tuple[Any, dict[str, Any]]:
    """Tree-GRPO: A = z(R over the prompt's leaves) + z(R over the leaves of its tree); each
    z-score is (R − mean)/(std + eps), a group of one has mean 0 and std 1."""
    from calibadv.methods.advantage import _rollout_advantage

    a_prompt = _rollout_advantage(scores, group_index, True, eps)[0]
    trees = [(g, t) for g, t in zip(group_index, tree_index)]
    a_tree = _rollout_advantage(scores, trees, True, eps)[0]
    adv = a_prompt + a_tree
    return adv.unsqueeze(-1) * response_mask, {"rollout_advantage": adv.tolist()}


@ESTIMATORS.register(
    "tree_grpo",
    knobs={"eps": Knob(float, 1e-6, "added to each std (Tree-GRPO's 1e-6)", min=0.0)},
    description="Tree-GRPO: prompt-level + tree-level z-scores of leaves",
    works_with={"rollout": ("tree",)},
)
def _tree_grpo(batch: EstimatorBatch, eps: float) -> tuple[Any, dict[str, Any]]:
    missing = [i for i, r in enumerate(batch.rollouts) if r.get("tree") is None]
    if missing:
        from calibadv.errors import ConfigError

        raise ConfigError(
            "estimator.name = 'tree_grpo' needs tree rollouts (rollout.name: tree); "
            f"{len(missing)} rollouts carry no tree id"
        )
    return tree_grpo_advantage(batch.scores, batch.response_mask, batch.groups,
                               [r["tree"] for r in batch.rollouts], eps)


# --------------------------------------------------------------------------- PPO (GAE)
def gae(token_rewards: Any, values: Any, response_mask: Any, gamma: float, lam: float
        ) -> tuple[Any, Any]:
    """Generalised advantage estimation over response tokens, as verl 0.9.1's
    ``compute_gae_advantage_return`` (before its whitening): going backwards,
    δ_t = r_t + γ·V_next − V_t and A_t = δ_t + γλ·A_next, where V_next and A_next are those of
    the next token with mask 1 (observation tokens are skipped: they neither carry a value nor
    break the recursion; 0 after the last one). Returns (advantages, returns = A + V), both
    unmasked; only mask-1 positions are meaningful."""
    import torch

    rewards, values = token_rewards.float(), values.float()
    mask = response_mask.float()
    batch, width = rewards.shape
    next_v = torch.zeros(batch, dtype=torch.float32, device=rewards.device)
    next_a = torch.zeros_like(next_v)
    adv = torch.zeros_like(rewards)
    for t in reversed(range(width)):
        a_t = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * next_a
        adv[:, t] = a_t
        next_v = torch.where(mask[:, t] > 0, values[:, t], next_v)
        next_a = torch.where(mask[:, t] > 0, a_t, next_a)
    return adv, adv + values


@ESTIMATORS.register(
    "gae",
    knobs={
        "gamma": Knob(float, 1.0, "discount (StepSearch's train.sh: 1)", min=0.0, max=1.0),
        "lam": Knob(float, 1.0, "GAE lambda (StepSearch's train.sh: 1)", min=0.0, max=1.0),
        "kl_coef": Knob(float, 0.001, "KL penalty in the reward, beta·KL(old‖ref) on every "
                        "response token (StepSearch: 0.001, fixed controller)", min=0.0),
        "kl_penalty": Knob(str, "kl", "verl's KL estimator of the reward penalty (verl's "
                           "default 'kl' = log π_old − log π_ref)",
                           choices=("kl", "abs", "mse", "low_var_kl")),
        "critic_lr": Knob(float, 5e-7, "learning rate of the value model (StepSearch: 5e-7)",
                          min=0.0),
        "cliprange_value": Knob(float, 0.5, "value clip range of the critic loss (verl's "
                                "critic default 0.5)", min=0.0),
    },
    description="PPO's GAE on token rewards minus a KL penalty, with a value model",
    needs=("values",),
)
def _gae(batch: EstimatorBatch, gamma: float, lam: float, kl_coef: float, kl_penalty: str,
         critic_lr: float, cliprange_value: float) -> tuple[Any, dict[str, Any]]:
    """Token rewards of the preset's reward part, minus kl_coef·KL(old, ref) on response
    tokens (verl's ``apply_kl_penalty`` with a fixed controller), then :func:`gae` and the
    batch whitening of the advantages. ``critic_lr`` and ``cliprange_value`` are the value
    model's, read by the backend. Stats carry ``returns`` (the value targets) and ``values``."""
    from calibadv.errors import ConfigError
    from calibadv.methods.token_rewards import token_scores

    if batch.values is None:
        raise ConfigError("estimator.name = 'gae' needs a value model's values: this backend did "
                          "not provide them")
    mask = batch.response_mask.float()
    width = mask.shape[1]
    rewards, stats = token_scores(batch.reward[0], batch.reward[1], batch.scores.tolist(),
                                  batch.rollouts, width)
    rewards = rewards.to(mask.device)
    if kl_coef > 0:
        if batch.old_logp is None or batch.ref_logp is None:
            raise ConfigError("estimator.knobs.kl_coef > 0 needs the old and reference "
                              "log-probs: this backend did not provide them")
        from verl.trainer.ppo.core_algos import kl_penalty as kl_fn

        kld = kl_fn(batch.old_logp.float(), batch.ref_logp.float(), kl_penalty) * mask
        rewards = rewards - kl_coef * kld
        n = mask.sum(-1).clamp(min=1)
        stats["reward_kl_penalty"] = float(((kld.sum(-1) / n)).mean())
    values = batch.values.float().to(mask.device)
    adv, returns = gae(rewards, values, mask, gamma, lam)
    if mask.sum() > 1:  # verl's whitening over the batch's response tokens (unbiased variance)
        from verl.utils.torch_functional import masked_whiten

        adv = masked_whiten(adv, mask)
    stats.update(returns=returns * mask, values=values * mask,
                 value_mean=float((values * mask).sum() / mask.sum().clamp(min=1)),
                 return_mean=float((returns * mask).sum() / mask.sum().clamp(min=1)))
    return adv * mask, stats
