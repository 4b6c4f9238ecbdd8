"""Advantage estimators for PPO and the critic-free algorithms, as pure torch functions.

Shapes: ``scores`` are per completion ``(N,)``; token tensors are ``(N, T)`` over response positions
with ``response_mask`` 1 on generated tokens. Group estimators expect the ``N`` rows to come in
consecutive groups of ``group_size`` completions of one prompt. Test vectors live in ``tests/algo``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from medrlvr.algo import core
from medrlvr.algo.registry import ADVANTAGE_ESTIMATORS, register_advantage_estimator


def _grouped(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N,) → (N / G, G)``, failing clearly when ``N`` is not a multiple of ``G``."""
    if group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"{scores.shape[0]} completions do not split into groups of {group_size}")
    return scores.float().view(-1, group_size)


def group_relative_advantages(
    scores: torch.Tensor, group_size: int, eps: float = 1e-9, normalize_std: bool = True
) -> torch.Tensor:
    """GRPO outcome advantages ``A_i = (r_i − mean(r)) / (std(r) + ε)`` within each prompt group.

    ``std`` is unbiased (Bessel-corrected), as in DeepSeekMath (Shao et al., 2024) and TRL; TRL's
    ε is 1e-4. ``normalize_std=False`` gives ``A_i = r_i − mean(r)``, the Dr. GRPO estimator (Liu et al.,
    2025, "Understanding R1-Zero-Like Training"). ``scores``: ``(N,)`` → ``(N,)``; needs ``G ≥ 2``.
    """
    if group_size < 2:
        raise ValueError("group-relative advantages need at least 2 completions per prompt (rollout.num_samples)")
    groups = _grouped(scores, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if normalize_std:
        centred = centred / (groups.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: ``A_i = r_i − (Σ_j r_j − r_i) / (G − 1)`` within each prompt group.

    The baseline of each sample is the mean of the other samples of its prompt (Kool et al., 2019;
    Ahmadian et al., 2024, "Back to Basics"). ``scores``: ``(N,)`` → ``(N,)``; needs ``G ≥ 2``.
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt (rollout.num_samples)")
    groups = _grouped(scores, group_size)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - baseline).reshape(-1)


def discounted_returns(rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-token returns-to-go ``G_t = Σ_{k ≥ t} γ^{k−t} r_k`` over masked rewards: ``(N, T) → (N, T)``.

    With rewards from :func:`medrlvr.algo.core.kl_penalty_rewards` (``r_t = −β·kl_t`` plus the score on
    the last token) and global whitening afterwards, this is REINFORCE++ (Hu, 2025, "REINFORCE++").
    """
    rewards = rewards * response_mask
    running = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * response_mask


def equal_reward_groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N / G,)`` bool: True for each prompt group whose scores are all equal (zero group-relative signal)."""
    groups = _grouped(scores, group_size)
    return groups.max(dim=1).values == groups.min(dim=1).values


@dataclass(frozen=True)
class EstimatorSettings:
    """``group_size`` completions per prompt (consecutive rows), the discount ``gamma``, GAE's ``lam`` and the
    ε of the group-normalised advantage."""

    group_size: int
    gamma: float
    lam: float
    group_eps: float


def _outcome(per_sequence: Tensor, rewards: Tensor, response_mask: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Every token gets its completion's advantage ``(N,)``; returns are the discounted returns-to-go."""
    return per_sequence.unsqueeze(1) * response_mask, discounted_returns(rewards, response_mask, gamma)


@register_advantage_estimator("gae", algorithm="ppo", critic=True)
def gae(rewards: Tensor, values: Tensor, response_mask: Tensor, s: EstimatorSettings) -> tuple[Tensor, Tensor]:
    """GAE with the critic's ``values`` (:func:`medrlvr.algo.core.gae_advantages`)."""
    return core.gae_advantages(rewards, values, response_mask, s.gamma, s.lam)


@register_advantage_estimator("grpo", algorithm="grpo", groups=True)
def grpo(rewards: Tensor, values: Tensor, response_mask: Tensor, s: EstimatorSettings) -> tuple[Tensor, Tensor]:
    """Group-normalised outcome advantage of each completion's summed token rewards."""
    outcome = core.masked_sum(rewards, response_mask, dim=1)
    return _outcome(group_relative_advantages(outcome, s.group_size, s.group_eps), rewards, response_mask, s.gamma)


@register_advantage_estimator("grpo_no_std", algorithm="dr_grpo", groups=True)
def grpo_no_std(rewards: Tensor, values: Tensor, response_mask: Tensor, s: EstimatorSettings) -> tuple[Tensor, Tensor]:
    """Group-centred outcome advantage (Dr. GRPO: no division by the group's std)."""
    outcome = core.masked_sum(rewards, response_mask, dim=1)
    centred = group_relative_advantages(outcome, s.group_size, normalize_std=False)
    return _outcome(centred, rewards, response_mask, s.gamma)


@register_advantage_estimator("rloo", algorithm="rloo", groups=True)
def rloo(rewards: Tensor, values: Tensor, response_mask: Tensor, s: EstimatorSettings) -> tuple[Tensor, Tensor]:
    """Leave-one-out outcome advantage of each completion's summed token rewards."""
    outcome = core.masked_sum(rewards, response_mask, dim=1)
    return _outcome(rloo_advantages(outcome, s.group_size), rewards, response_mask, s.gamma)


@register_advantage_estimator("reinforce_pp", algorithm="reinforce_pp")
def reinforce_pp(rewards: Tensor, values: Tensor, response_mask: Tensor, s: EstimatorSettings) -> tuple[Tensor, Tensor]:
    """Discounted returns-to-go as advantages (whiten them afterwards for REINFORCE++)."""
    returns = discounted_returns(rewards, response_mask, s.gamma)
    return returns, returns


def estimate_advantages(
    estimator: str,
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    group_size: int,
    gamma: float,
    lam: float,
    group_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``(advantages, returns)``, both ``(N, T)``, from per-token ``rewards`` (KL-shaped or not).

    ``estimator`` names an entry of :data:`ADVANTAGE_ESTIMATORS`: ``gae`` uses the critic's ``values``; the
    outcome estimators (``grpo``, ``grpo_no_std``, ``rloo``) score each completion by the sum of its token
    rewards and give every token that advantage; ``reinforce_pp`` uses the discounted returns-to-go (whiten
    them afterwards for REINFORCE++). Without a critic ``returns`` are the discounted returns-to-go, kept for
    logging.
    """
    settings = EstimatorSettings(group_size=group_size, gamma=gamma, lam=lam, group_eps=group_eps)
    return ADVANTAGE_ESTIMATORS.get(estimator).fn(rewards, values, response_mask, settings)
