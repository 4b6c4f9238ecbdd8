"""PPO math against hand-computed vectors (see REFERENCE_VECTORS in the design notes)."""

import pytest
import torch

from medrlvr.algo import core

LOGPROBS = torch.tensor([[-1.0, -0.5, -2.0, -0.1]])
REF = torch.tensor([[-1.2, -0.5, -1.5, -0.3]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.tensor(expected).float(), atol=tol, rtol=0)


@pytest.mark.parametrize(
    "estimator, expected",
    [("k1", [0.2, 0.0, -0.5, 0.2]), ("k2", [0.02, 0.0, 0.125, 0.02]), ("k3", [0.018731, 0.0, 0.148721, 0.018731])],
)
def test_kl_estimators(estimator, expected):
    close(core.kl_estimate(LOGPROBS, REF, estimator)[0], expected)


def test_kl_estimate_is_clamped_and_rejects_unknown():
    close(core.kl_estimate(torch.tensor([0.0]), torch.tensor([-50.0]), "k1"), [10.0])
    with pytest.raises(ValueError, match="k4"):
        core.kl_estimate(LOGPROBS, REF, "k4")


def test_kl_penalty_rewards_put_score_on_last_response_token():
    kl = core.kl_estimate(LOGPROBS, REF, "k1")
    rewards = core.kl_penalty_rewards(torch.tensor([1.0]), kl, MASK, kl_coef=0.1)
    close(rewards[0], [-0.02, 0.0, 1.05, 0.0])


def test_kl_penalty_rewards_rows_of_different_lengths():
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    rewards = core.kl_penalty_rewards(torch.tensor([2.0, -1.0, 5.0]), torch.zeros(3, 3), mask, kl_coef=0.1)
    close(rewards, [[2.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0]])


def _reference_rewards():
    return torch.tensor([[-0.02, 0.0, 1.05, 0.0]])


def test_gae_lambda_one():
    values = torch.tensor([[0.5, 0.6, 0.7, 0.9]])
    advantages, returns = core.gae_advantages(_reference_rewards(), values, MASK, gamma=1.0, lam=1.0)
    close(advantages[0], [0.53, 0.45, 0.35, 0.0])
    close(returns[0], [1.03, 1.05, 1.05, 0.0])


def test_gae_lambda_095():
    values = torch.tensor([[0.5, 0.6, 0.7, 0.9]])
    advantages, _ = core.gae_advantages(_reference_rewards(), values, MASK, gamma=1.0, lam=0.95)
    close(advantages[0], [0.490875, 0.4325, 0.35, 0.0])


def test_gae_discount():
    # V = 0, gamma 0.5, lam 1: A_2 = 1, A_1 = 0.5 * A_2, A_0 = 0.5 * A_1
    advantages, returns = core.gae_advantages(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3), 0.5, 1.0)
    close(advantages[0], [0.25, 0.5, 1.0])
    close(returns[0], [0.25, 0.5, 1.0])


def test_masked_mean_and_var():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    close(core.masked_mean(values, MASK), 2.0)
    close(core.masked_var(values, MASK), 2.0 / 3.0)
    close(core.masked_var(values, MASK, unbiased=True), 1.0)
    close(core.masked_mean(values, torch.zeros_like(MASK)), 0.0)


def test_masked_whiten_uses_population_variance():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    std = (2.0 / 3.0) ** 0.5
    close(core.masked_whiten(values, MASK)[0], [-1 / std, 0.0, 1 / std, 0.0])


@pytest.mark.parametrize(
    "ratio, advantage, expected", [(1.5, 1.0, -1.2), (1.5, -1.0, 1.5), (0.5, 1.0, -0.5), (0.5, -1.0, 0.8)]
)
def test_policy_loss_vectors(ratio, advantage, expected):
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[ratio]]))
    loss, stats = core.policy_loss(new, old, torch.tensor([[advantage]]), torch.ones(1, 1), clip_range=0.2)
    close(loss, expected)
    clipped = expected in (-1.2, 0.8)
    close(stats["clip_frac"], 1.0 if clipped else 0.0)


def test_policy_loss_gradient_is_zero_when_clipped():
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = core.policy_loss(new, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.2)
    loss.backward()
    assert new.grad.abs().item() == 0.0


def test_value_loss_vector():
    loss, stats = core.value_loss(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.8]]), torch.ones(1, 1), clip_range=0.5
    )
    close(loss, 0.045)
    close(stats["clip_frac"], 1.0)
    unclipped, _ = core.value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.8]]), torch.ones(1, 1), None)
    close(unclipped, 0.02)


def test_loss_aggregation_modes():
    loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    close(core.aggregate_loss(loss, mask, "token-mean"), 7.0 / 4.0)
    close(core.aggregate_loss(loss, mask, "seq-mean-token-mean"), (1.0 + 4.0) / 2)
    close(core.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", norm_constant=3.0), (3.0 / 3 + 4.0 / 3) / 2)
    with pytest.raises(ValueError):
        core.aggregate_loss(loss, mask, "sum")


def test_entropy_and_logprobs_from_logits():
    logits = torch.tensor([[[0.0, 0.0], [0.0, torch.log(torch.tensor(3.0))]]])
    close(core.entropy_from_logits(logits)[0], [0.693147, 0.562335])
    close(core.logprobs_from_logits(logits, torch.tensor([[0, 1]]))[0], [-0.693147, -0.287682])


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    close(core.explained_variance(returns, returns, MASK), 1.0)
    close(core.explained_variance(torch.full_like(returns, 2.0), returns, MASK), 0.0)
    close(core.explained_variance(torch.zeros_like(returns), torch.ones_like(returns), MASK), 0.0)


def test_truncated_is_weights_vectors():
    # ratios exp(old − rollout) = 2, 0.5, 1, 5 (padding); cap 1.5 → 1.5, 0.5, 1, 0
    old, rollout = torch.log(torch.tensor([[2.0, 0.5, 1.0, 5.0]])), torch.zeros(1, 4)
    weights, stats = core.truncated_is_weights(old, rollout, MASK, cap=1.5)
    close(weights[0], [1.5, 0.5, 1.0, 0.0])
    close(stats["tis_weight_mean"], 1.0)
    close(stats["tis_clip_frac"], 1 / 3)


def test_policy_loss_with_is_weights():
    # ratio 1 (no clipping): token losses −A = −1, 2, −3, weighted by 1.5, 0.5, 1 → mean (−1.5 + 1 − 3) / 3
    old = torch.log(torch.tensor([[2.0, 0.5, 1.0, 5.0]]))
    weights, _ = core.truncated_is_weights(old, torch.zeros(1, 4), MASK, cap=1.5)
    logprobs = old.clone().requires_grad_()
    advantages = torch.tensor([[1.0, -2.0, 3.0, 7.0]])
    loss, _ = core.policy_loss(logprobs, old, advantages, MASK, clip_range=0.2, is_weights=weights)
    close(loss, -3.5 / 3)
    loss.backward()
    close(logprobs.grad[0], [-0.5, 1 / 3, -1.0, 0.0])  # −A·w·ratio / 3: the weights carry no gradient
    unweighted, _ = core.policy_loss(old, old, advantages, MASK, clip_range=0.2)
    close(unweighted, -2.0 / 3)


def test_accumulation_weights_rebuild_the_minibatch_loss():
    # rows with 3, 1 | 2, 4 response tokens, split into two micro-batches of two rows
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    loss = torch.arange(16, dtype=torch.float32).view(4, 4)
    first, second = mask[:2], mask[2:]
    assert core.accumulation_weight(first, mask) == pytest.approx(4 / 10)  # tokens
    assert core.accumulation_weight(second, mask) == pytest.approx(6 / 10)
    assert core.accumulation_weight(first, mask, "seq-mean-token-mean") == 0.5  # sequences
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        parts = sum(
            core.accumulation_weight(m, mask, mode) * core.aggregate_loss(part, m, mode, 4.0)
            for part, m in ((loss[:2], first), (loss[2:], second))
        )
        assert parts == pytest.approx(core.aggregate_loss(loss, mask, mode, 4.0).item()), mode
    # token-mean by hand: (0+1+2 + 4 + 8+9 + 12+13+14+15) / 10
    assert core.aggregate_loss(loss, mask).item() == pytest.approx(78 / 10)
