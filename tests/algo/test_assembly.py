"""The RL glue against hand-computed values: scores → KL-shaped rewards → advantages → whitening, and the
loss's terms with their signs and coefficients (numbers from the shared reference vectors)."""

import math

import pytest
import torch

from medrlvr.algo.assembly import LossSettings, ppo_loss, shape_advantages

# reference vectors: x = logprobs − ref = [0.2, 0.0, −0.5, 0.2]; the 4th token is padding
LOGPROBS = torch.tensor([[-1.0, -0.5, -2.0, -0.1]])
REF = torch.tensor([[-1.2, -0.5, -1.5, -0.3]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
VALUES = torch.tensor([[0.5, 0.6, 0.7, 0.9]])


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.tensor(expected).float(), atol=tol, rtol=0)


def shape(scores, logprobs, ref, values, mask, **overrides):
    settings = dict(
        kl_coef=0.1, kl_estimator="k1", advantage_estimator="gae", group_size=1, gamma=1.0, lam=0.95,
        group_eps=1e-9, whiten=False,
    )
    return shape_advantages(scores, logprobs, ref, values, mask, **settings | overrides)


def test_ppo_kl_in_the_reward_then_gae():
    out = shape(torch.tensor([1.0]), LOGPROBS, REF, VALUES, MASK)
    close(out.kl, [[0.2, 0.0, -0.5, 0.0]])  # masked: the padding's 0.2 is dropped
    close(out.rewards, [[-0.02, 0.0, 1.05, 0.0]])  # −0.1·kl, plus the score on the last response token
    close(out.advantages, [[0.490875, 0.4325, 0.35, 0.0]])  # γ = 1, λ = 0.95
    close(out.returns, [[0.990875, 1.0325, 1.05, 0.0]])  # A + V


def test_kl_coef_zero_leaves_the_kl_out_of_the_reward():
    # GRPO keeps the KL for a loss term: rewards are the bare scores; group [1, 0]: mean 0.5, std √0.5
    logprobs, ref = LOGPROBS[:, :2].repeat(2, 1), REF[:, :2].repeat(2, 1)
    mask = torch.ones(2, 2)
    out = shape(torch.tensor([1.0, 0.0]), logprobs, ref, torch.zeros(2, 2), mask, kl_coef=0.0,
                advantage_estimator="grpo", group_size=2)
    close(out.kl, [[0.2, 0.0], [0.2, 0.0]])
    close(out.rewards, [[0.0, 1.0], [0.0, 0.0]])
    close(out.advantages, [[0.707107, 0.707107], [-0.707107, -0.707107]])


def test_reinforce_pp_whitens_over_the_whole_batch():
    logprobs = torch.tensor([[-1.0, -0.5, -2.0, -0.1], [-0.4, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.2, -0.5, -1.5, -0.3], [-0.5, -0.8, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    out = shape(torch.tensor([1.0, 0.0]), logprobs, ref, torch.zeros(2, 4), mask, advantage_estimator="reinforce_pp",
                gamma=1.0, whiten=True)
    close(out.returns, [[1.03, 1.05, 1.05, 0.0], [0.01, 0.02, 0.0, 0.0]])
    # one mean (0.632) and population variance (0.253856) over the 5 response tokens of both rows
    close(out.advantages, [[0.789931, 0.829626, 0.829626, 0.0], [-1.234516, -1.214668, 0.0, 0.0]])
    unwhitened = shape(torch.tensor([1.0, 0.0]), logprobs, ref, torch.zeros(2, 4), mask,
                       advantage_estimator="reinforce_pp", whiten=False)
    close(unwhitened.advantages, out.returns.tolist())


SETTINGS = LossSettings(
    clip_range_low=0.2, clip_range_high=0.2, dual_clip=None, value_clip_range=0.5, value_loss_coef=0.5,
    entropy_coef=0.01, kl_loss_coef=0.1, kl_estimator="k1", loss_aggregation="token-mean", norm_constant=1.0, tis_cap=None,
)


def loss_inputs(**overrides):
    """Two tokens with ratios 1.5 (A = +1) and 0.5 (A = −1): clipped policy losses −1.2 and 0.8 (mean −0.2);
    entropy [1, 2] (mean 1.5); V = 1, V_old = 0, R = 0.8: value loss 0.045 per token; KL x = [0.2, 0.4]
    (k1 mean 0.3)."""
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5)]])
    inputs = dict(
        logprobs=logprobs, entropy=torch.tensor([[1.0, 2.0]]), values=torch.ones(1, 2),
        old_logprobs=torch.zeros(1, 2), rollout_logprobs=torch.zeros(1, 2), ref_logprobs=logprobs - torch.tensor([[0.2, 0.4]]),
        old_values=torch.zeros(1, 2), advantages=torch.tensor([[1.0, -1.0]]), returns=torch.full((1, 2), 0.8),
        response_mask=torch.ones(1, 2),
    )
    return inputs | overrides


def test_loss_sums_its_terms_with_their_signs_and_coefficients():
    loss, stats = ppo_loss(SETTINGS, **loss_inputs())
    # −0.2 (policy) − 0.01·1.5 (entropy bonus) + 0.5·0.045 (value) + 0.1·0.3 (KL loss)
    assert loss.item() == pytest.approx(-0.2 - 0.015 + 0.0225 + 0.03)
    expected = {"policy_loss": -0.2, "entropy": 1.5, "value_loss": 0.045, "kl_loss": 0.3, "clip_frac": 1.0}
    assert {key: pytest.approx(stats[key].item()) for key in expected} == expected


def test_terms_drop_out_without_a_critic_or_a_kl_loss():
    no_critic, stats = ppo_loss(SETTINGS, **loss_inputs(values=None))
    assert no_critic.item() == pytest.approx(-0.2 - 0.015 + 0.03) and "value_loss" not in stats
    no_kl = LossSettings(**SETTINGS.__dict__ | {"kl_loss_coef": 0.0})
    loss, stats = ppo_loss(no_kl, **loss_inputs())
    assert loss.item() == pytest.approx(-0.2 - 0.015 + 0.0225) and "kl_loss" not in stats


def test_entropy_bonus_lowers_the_loss_and_its_gradient_raises_entropy():
    entropy = torch.tensor([[1.0, 2.0]], requires_grad=True)
    loss, _ = ppo_loss(SETTINGS, **loss_inputs(entropy=entropy))
    loss.backward()
    close(entropy.grad, [[-0.005, -0.005]])  # −c_H / 2 tokens: descending the loss raises the entropy


def test_truncated_importance_weights_scale_the_policy_term():
    # token 1 was twice as likely for the trainer as for the rollout engine: weight min(2, 1.5) = 1.5
    settings = LossSettings(**SETTINGS.__dict__ | {"tis_cap": 1.5, "kl_loss_coef": 0.0, "entropy_coef": 0.0})
    loss, stats = ppo_loss(settings, **loss_inputs(values=None, rollout_logprobs=torch.tensor([[-math.log(2.0), 0.0]])))
    assert stats["policy_loss"].item() == pytest.approx((-1.2 * 1.5 + 0.8) / 2)
    assert stats["tis_clip_frac"].item() == pytest.approx(0.5) and loss.item() == pytest.approx(-0.5)

