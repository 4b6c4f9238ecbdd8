"""PPO math as pure torch functions.

Shapes: ``(B, T)`` tensors cover the response positions only; ``response_mask`` is 1 on generated
tokens and 0 on padding after the end of a completion. Conventions follow OpenRLHF (the trainer of
the MED-RLVR study); where trainers differ, the docstring names the choice. Hand-computed test vectors
live in ``tests/algo``.
"""

from __future__ import annotations

import torch

from medrlvr.algo.registry import KL_ESTIMATORS, LOSS_AGGREGATIONS


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (0 when the mask is empty)."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp_min(1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Variance over masked positions; population variance by default (OpenRLHF), Bessel-corrected if ``unbiased``."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        var = var * count / (count - 1).clamp_min(1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Whiten with one global masked mean and population variance: ``(x - μ) · rsqrt(max(var, 1e-8))``.

    This is OpenRLHF's convention; TRL and verl use the Bessel-corrected variance plus 1e-8, which
    differs on small batches. Masked-out positions are returned as 0.
    """
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask).clamp_min(1e-8))
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


@KL_ESTIMATORS.register("k1")
def kl_k1(log_ratio: torch.Tensor) -> torch.Tensor:
    """``k1 = x`` with ``x = log π − log π_ref``: unbiased, high variance, can be negative."""
    return log_ratio


@KL_ESTIMATORS.register("k2")
def kl_k2(log_ratio: torch.Tensor) -> torch.Tensor:
    """``k2 = x²/2``: biased, low variance, never negative."""
    return log_ratio.pow(2) / 2


@KL_ESTIMATORS.register("k3")
def kl_k3(log_ratio: torch.Tensor) -> torch.Tensor:
    """``k3 = exp(−x) − 1 + x``: unbiased, low variance, never negative."""
    return torch.expm1(-log_ratio) + log_ratio


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1", clamp: float = 10.0
) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate on sampled tokens, with ``x = logprobs − ref_logprobs``.

    ``estimator`` names a function of :data:`KL_ESTIMATORS`: k1 = x; k2 = x²/2; k3 = exp(−x) − 1 + x
    (Schulman, "Approximating KL divergence", 2020). The estimate is clamped to ``[−clamp, clamp]`` as in
    OpenRLHF. ``(B, T)`` in, ``(B, T)`` out.
    """
    log_ratio = logprobs.float() - ref_logprobs.float()
    return KL_ESTIMATORS.get(estimator)(log_ratio).clamp(-clamp, clamp)


def kl_penalty_rewards(
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards ``r_t = −β·kl_t`` with the completion's score added at its last response token.

    ``scores``: ``(B,)``; ``kl``, ``response_mask``: ``(B, T)``. The score goes on the last position
    whose mask is 1 (OpenRLHF; TRL's PPO puts it one position later). Returns ``(B, T)``, zero on padding.
    """
    rewards = -kl_coef * kl * response_mask
    last = (response_mask.cumsum(dim=1) == response_mask.sum(dim=1, keepdim=True)) & (response_mask > 0)
    last_index = last.float().argmax(dim=1)
    has_tokens = response_mask.sum(dim=1) > 0
    rows = torch.arange(scores.shape[0], device=scores.device)[has_tokens]
    rewards[rows, last_index[has_tokens]] += scores[has_tokens].to(rewards.dtype)
    return rewards


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016) over response tokens.

    Rewards and values are masked first; for t = T−1 … 0: ``δ_t = r_t + γ·V_{t+1} − V_t`` (``V_T = 0``),
    ``A_t = δ_t + γλ·A_{t+1}``; ``returns = A + V``. Returns ``(advantages, returns)``, both ``(B, T)``.
    """
    rewards = rewards * response_mask
    values = values * response_mask
    advantages_reversed = []
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        next_value = values[:, t]
        advantages_reversed.append(next_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * response_mask
    return advantages, (advantages + values) * response_mask


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(loss: torch.Tensor, response_mask: torch.Tensor, norm_constant: float = 1.0) -> torch.Tensor:
    """Mean over all response tokens of the minibatch."""
    return masked_mean(loss, response_mask)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss: torch.Tensor, response_mask: torch.Tensor, norm_constant: float = 1.0) -> torch.Tensor:
    """Mean over sequences of per-sequence token means (OpenRLHF's PolicyLoss and ValueLoss)."""
    return masked_mean(loss, response_mask, dim=1).mean()


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss: torch.Tensor, response_mask: torch.Tensor, norm_constant: float = 1.0) -> torch.Tensor:
    """Mean over sequences of token sums divided by ``norm_constant`` (Dr. GRPO, Liu et al. 2025: no length bias)."""
    return (masked_sum(loss, response_mask, dim=1) / norm_constant).mean()


def aggregate_loss(
    loss: torch.Tensor, response_mask: torch.Tensor, mode: str = "token-mean", norm_constant: float = 1.0
) -> torch.Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar with the :data:`LOSS_AGGREGATIONS` function ``mode``.

    ``token-mean``: mean over all response tokens of the minibatch; ``seq-mean-token-mean``: mean over
    sequences of per-sequence token means; ``seq-mean-token-sum-norm``: mean over sequences of token
    sums divided by ``norm_constant`` (Dr. GRPO, Liu et al. 2025, which removes the length bias).
    """
    return LOSS_AGGREGATIONS.get(mode)(loss, response_mask, norm_constant)


def accumulation_weight(micro_mask: torch.Tensor, mini_mask: torch.Tensor, mode: str = "token-mean") -> float:
    """Weight of a micro-batch's aggregated loss in its minibatch's loss, for gradient accumulation.

    Summed over the micro-batches that partition a minibatch, ``weight × aggregate_loss(micro)`` equals
    ``aggregate_loss(minibatch)``: the micro-batch's share of response tokens for ``token-mean``, of
    sequences for the per-sequence modes. ``micro_mask`` and ``mini_mask`` are ``(b, T)`` and ``(B, T)``.
    """
    if mode == "token-mean":
        return float(micro_mask.sum() / mini_mask.sum().clamp_min(1))
    return micro_mask.shape[0] / mini_mask.shape[0]


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range: float,
    aggregation: str = "token-mean",
    *,
    clip_range_high: float | None = None,
    dual_clip: float | None = None,
    norm_constant: float = 1.0,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al., 2017): ``L = −min(ρ·A, clip(ρ, 1−ε_low, 1+ε_high)·A)``.

    ``ρ = exp(logprobs − old_logprobs)`` with the log-ratio clamped to [−20, 20]. ``clip_range`` is ε_low;
    ``clip_range_high`` sets ε_high (None = ``clip_range``; a larger ε_high is DAPO's "clip-higher",
    Yu et al., 2025). ``dual_clip`` c > 1 bounds the loss of negative-advantage tokens by ``−c·A``:
    ``L = −max(min(ρ·A, clip(ρ)·A), c·A)`` for A < 0 (Ye et al., 2020). ``norm_constant`` is the divisor
    of ``seq-mean-token-sum-norm``. ``is_weights`` ``(B, T)`` (no gradient) multiply each token's loss
    before aggregation, e.g. :func:`truncated_is_weights`. Returns the aggregated loss and stats: ``clip_frac`` (share of tokens
    where the clipped term is active), ``dual_clip_frac`` and ``approx_kl`` (k3 estimate of KL(π_old‖π)).
    """
    high = clip_range if clip_range_high is None else clip_range_high
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    surrogate = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + high) * advantages
    loss = -torch.minimum(surrogate, clipped)
    dual_clipped = torch.zeros_like(loss, dtype=torch.bool)
    if dual_clip is not None:
        bound = -dual_clip * advantages
        dual_clipped = (advantages < 0) & (loss > bound)
        loss = torch.where(dual_clipped, bound, loss)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped < surrogate).float(), response_mask),
            "dual_clip_frac": masked_mean(dual_clipped.float(), response_mask),
            "approx_kl": masked_mean(torch.expm1(-log_ratio) + log_ratio, response_mask),
        }
    return aggregate_loss(loss, response_mask, aggregation, norm_constant), stats


def truncated_is_weights(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, response_mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance-sampling weights against rollout/trainer mismatch: ``w = min(exp(old − rollout), C)``.

    ``old_logprobs`` are the trainer's log-probs of the sampled tokens before the update, ``rollout_logprobs``
    the generating engine's (e.g. vLLM in another precision); the policy loss of each token is multiplied
    by ``w`` (Yao et al., 2025, "Your efficient RL framework secretly brings you off-policy RL training";
    verl's ``tis_imp_ratio_cap``). ``(B, T)`` in, ``(B, T)`` out, 0 on padding; the log-ratio is clamped to
    [−20, 20]. Stats: ``tis_weight_mean`` and ``tis_clip_frac`` (share of tokens whose ratio exceeds C).
    """
    ratio = (old_logprobs - rollout_logprobs).clamp(-20.0, 20.0).exp()
    weights = ratio.clamp(max=cap) * response_mask
    stats = {
        "tis_weight_mean": masked_mean(weights, response_mask),
        "tis_clip_frac": masked_mean((ratio > cap).float(), response_mask),
    }
    return weights, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range: float | None,
    aggregation: str = "token-mean",
    norm_constant: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ``V_clip = V_old + clip(V − V_old, −ε_v, ε_v)``, ``L = ½·max((V−R)², (V_clip−R)²)``.

    ``clip_range=None`` gives the unclipped ``½·(V−R)²``. Stats: ``clip_frac`` of tokens where the clipped
    error is the larger one.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        loss = unclipped
        clip_frac = torch.zeros((), device=values.device)
    else:
        values_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        clipped = (values_clipped - returns) ** 2
        loss = torch.maximum(unclipped, clipped)
        with torch.no_grad():
            clip_frac = masked_mean((clipped > unclipped).float(), response_mask)
    return 0.5 * aggregate_loss(loss, response_mask, aggregation, norm_constant), {"clip_frac": clip_frac}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: ``(B, T, V) → (B, T)``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``token_ids`` (``(B, T)``) under ``logits`` (``(B, T, V)``)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(dim=-1, index=token_ids.unsqueeze(-1)).squeeze(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``1 − Var(R − V) / Var(R)`` over masked tokens (1 = perfect critic, ≤ 0 = no better than a constant)."""
    var_returns = masked_var(returns, response_mask)
    if var_returns <= 0:
        return torch.zeros((), device=values.device)
    return 1.0 - masked_var(returns - values, response_mask) / var_returns
