"""How the pieces of :mod:`medrlvr.algo.core` and :mod:`medrlvr.algo.advantages` combine in one PPO iteration.

:func:`shape_advantages` turns scores into advantages (KL → per-token rewards → estimator → whitening);
:func:`ppo_loss` sums the terms of the update's loss with their signs and coefficients. Tensors in, tensors
out: shapes ``(N, T)`` over response positions with ``response_mask`` 1 on generated tokens, ``scores``
``(N,)``. The Lightning module calls them; the tests check them against hand-computed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medrlvr.algo import advantages as adv
from medrlvr.algo import core


@dataclass(frozen=True)
class ShapedAdvantages:
    """``kl`` per token (0 on padding), ``rewards`` per token, ``advantages`` and ``returns``: all ``(N, T)``."""

    kl: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def shape_advantages(
    scores: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    kl_coef: float,
    kl_estimator: str,
    advantage_estimator: str,
    group_size: int,
    gamma: float,
    lam: float,
    group_eps: float,
    whiten: bool,
) -> ShapedAdvantages:
    """``kl = kl_estimate(old, ref)·mask``; ``r_t = −kl_coef·kl_t`` plus the score on the last token; the
    estimator's ``(advantages, returns)``; then, when ``whiten``, advantages whitened with one masked mean and
    variance over the whole batch (:func:`medrlvr.algo.core.masked_whiten`). ``kl_coef`` 0 leaves the KL out
    of the rewards (a KL loss term instead). ``values`` are the critic's (zeros without one)."""
    kl = core.kl_estimate(old_logprobs, ref_logprobs, kl_estimator) * response_mask
    rewards = core.kl_penalty_rewards(scores, kl, response_mask, kl_coef)
    advantages, returns = adv.estimate_advantages(
        advantage_estimator, rewards, values, response_mask, group_size=group_size, gamma=gamma, lam=lam,
        group_eps=group_eps,
    )
    if whiten:
        advantages = core.masked_whiten(advantages, response_mask)
    return ShapedAdvantages(kl=kl, rewards=rewards, advantages=advantages, returns=returns)


@dataclass(frozen=True)
class LossSettings:
    """The loss's clip ranges, coefficients and aggregation (``algo.*`` of the same names; ``norm_constant`` is
    the divisor of ``seq-mean-token-sum-norm``, ``clip_range_low`` the policy's ε)."""

    clip_range_low: float
    clip_range_high: float
    dual_clip: float | None
    value_clip_range: float | None
    value_loss_coef: float
    entropy_coef: float
    kl_loss_coef: float
    kl_estimator: str
    loss_aggregation: str
    norm_constant: float
    tis_cap: float | None


def ppo_loss(
    settings: LossSettings,
    *,
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor | None,
    old_logprobs: torch.Tensor,
    rollout_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``L = L_policy − c_H·H + c_V·L_value + c_KL·L_KL``.

    ``L_policy``: the clipped surrogate (:func:`medrlvr.algo.core.policy_loss`), weighted by truncated
    importance weights when ``tis_cap`` is set; ``H``: the mean entropy over response tokens (a bonus, hence
    the minus sign); ``L_value``: the clipped value loss, only when ``values`` (the critic's, ``(N, T)``) are
    given; ``L_KL``: ``kl_estimator``'s KL(π‖π_ref) aggregated like the policy loss, only when
    ``kl_loss_coef > 0``. ``logprobs``, ``entropy`` and ``values`` come from the current policy's forward
    pass. Returns the scalar loss and stats (``policy_loss``, ``entropy``, ``clip_frac``, ``dual_clip_frac``,
    ``approx_kl``, the ``tis_*`` weights', ``value_loss``/``value_clip_frac``, ``kl_loss``; 0-dim tensors).
    """
    s = settings
    is_weights, is_stats = None, {}
    if s.tis_cap is not None:
        is_weights, is_stats = core.truncated_is_weights(old_logprobs, rollout_logprobs, response_mask, s.tis_cap)
    pg_loss, pg_stats = core.policy_loss(
        logprobs, old_logprobs, advantages, response_mask, s.clip_range_low, s.loss_aggregation,
        clip_range_high=s.clip_range_high, dual_clip=s.dual_clip, norm_constant=s.norm_constant,
        is_weights=is_weights,
    )
    mean_entropy = core.masked_mean(entropy, response_mask)
    loss = pg_loss - s.entropy_coef * mean_entropy
    stats = {"policy_loss": pg_loss, "entropy": mean_entropy, **pg_stats, **is_stats}
    if values is not None:
        vf_loss, vf_stats = core.value_loss(
            values, old_values, returns, response_mask, s.value_clip_range, s.loss_aggregation, s.norm_constant
        )
        loss = loss + s.value_loss_coef * vf_loss
        stats.update({"value_loss": vf_loss, "value_clip_frac": vf_stats["clip_frac"]})
    if s.kl_loss_coef > 0:
        kl = core.kl_estimate(logprobs, ref_logprobs, s.kl_estimator)
        kl_loss = core.aggregate_loss(kl, response_mask, s.loss_aggregation, s.norm_constant)
        loss = loss + s.kl_loss_coef * kl_loss
        stats["kl_loss"] = kl_loss
    return loss, stats
