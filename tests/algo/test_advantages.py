"""Critic-free advantage estimators and the clip variants against hand-computed vectors."""

import pytest
import torch

from medrlvr.algo import advantages as adv
from medrlvr.algo import core


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.tensor(expected).float(), atol=tol, rtol=0)


def test_group_relative_unbiased_std():
    # mean 0.5, unbiased std sqrt(1/3) = 0.57735: ±0.5 / 0.57735 = ±0.866025
    close(adv.group_relative_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, eps=1e-9), [0.866025, -0.866025, -0.866025, 0.866025])
    close(adv.group_relative_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, eps=1e-4), [0.865875, -0.865875, -0.865875, 0.865875])


def test_group_relative_normalises_each_group_separately():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, -1.0, 1.0, 1.0])
    out = adv.group_relative_advantages(scores, 4)
    close(out[:4], [0.866025, -0.866025, -0.866025, 0.866025])
    close(out[4:8], [0.0, 0.0, 0.0, 0.0])  # equal rewards: no signal, no division by zero
    # group 3: mean 1, unbiased std sqrt(8/3) = 1.632993
    close(out[8:], [1.224745, -1.224745, 0.0, 0.0])


def test_dr_grpo_keeps_the_scale():
    close(adv.group_relative_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0]), 2, normalize_std=False), [0.5, -0.5, -0.5, 0.5, 1.0, -1.0])


def test_rloo_leave_one_out_baseline():
    # group [1, 0, 0, 1]: baseline of a 1 is (2 - 1)/3, of a 0 is 2/3; group [3, 1]: baselines 1 and 3
    close(adv.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    close(adv.rloo_advantages(torch.tensor([3.0, 1.0, 5.0, 5.0]), 2), [2.0, -2.0, 0.0, 0.0])


@pytest.mark.parametrize("fn", [adv.group_relative_advantages, adv.rloo_advantages])
def test_group_estimators_reject_bad_groups(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="groups of 2"):
        fn(torch.tensor([1.0, 0.0, 1.0]), 2)


def test_equal_reward_groups():
    flags = adv.equal_reward_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, -1.0, -1.0]), 2)
    assert flags.tolist() == [True, False, True]


def test_discounted_returns():
    rewards = torch.tensor([[-0.02, 0.0, 1.05, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    close(adv.discounted_returns(rewards, mask, 1.0)[0], [1.03, 1.05, 1.05, 0.0])
    # γ = 0.9: G2 = 1.05, G1 = 0.9·1.05 = 0.945, G0 = −0.02 + 0.9·0.945 = 0.8305
    close(adv.discounted_returns(rewards, mask, 0.9)[0], [0.8305, 0.945, 1.05, 0.0])


def test_reinforce_pp_returns_then_masked_whiten_by_hand():
    # the pieces one at a time; tests/algo/test_assembly.py checks that the pipeline whitens this way
    logprobs = torch.tensor([[-1.0, -0.5, -2.0, -0.1], [-0.4, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.2, -0.5, -1.5, -0.3], [-0.5, -0.8, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    kl = core.kl_estimate(logprobs, ref, "k1") * mask  # row 2: [0.1, −0.2]
    rewards = core.kl_penalty_rewards(torch.tensor([1.0, 0.0]), kl, mask, kl_coef=0.1)
    close(rewards, [[-0.02, 0.0, 1.05, 0.0], [-0.01, 0.02, 0.0, 0.0]])
    advantages, returns = adv.estimate_advantages(
        "reinforce_pp", rewards, torch.zeros_like(rewards), mask, group_size=1, gamma=1.0, lam=1.0, group_eps=1e-9
    )
    close(returns, [[1.03, 1.05, 1.05, 0.0], [0.01, 0.02, 0.0, 0.0]])
    # global mean 0.632 and population variance 0.253856 over the 5 response tokens
    close(core.masked_whiten(advantages, mask), [[0.789931, 0.829626, 0.829626, 0.0], [-1.234516, -1.214668, 0.0, 0.0]])


def test_outcome_estimators_give_every_token_the_sequence_advantage():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = core.kl_penalty_rewards(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.zeros(4, 3), mask, kl_coef=0.1)
    kwargs = dict(group_size=4, gamma=1.0, lam=1.0, group_eps=1e-9)
    grpo, _ = adv.estimate_advantages("grpo", rewards, torch.zeros(4, 3), mask, **kwargs)
    close(grpo, [[0.866025, 0.866025, 0.0], [-0.866025, 0.0, 0.0], [-0.866025] * 3, [0.866025, 0.866025, 0.0]])
    rloo, _ = adv.estimate_advantages("rloo", rewards, torch.zeros(4, 3), mask, **kwargs)
    close(rloo[:, 0], [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    no_std, _ = adv.estimate_advantages("grpo_no_std", rewards, torch.zeros(4, 3), mask, **kwargs)
    close(no_std[:, 0], [0.5, -0.5, -0.5, 0.5])
    with pytest.raises(ValueError, match="algo.advantage_estimator: unknown 'ppo'; choose one of gae, grpo"):
        adv.estimate_advantages("ppo", rewards, torch.zeros(4, 3), mask, **kwargs)


def test_outcome_reward_includes_the_kl_penalty():
    # sequence rewards: 1 − 0.1·(0.5 + 0.5) = 0.9 and 0 − 0.1·(−1) = 0.1; RLOO with G = 2: ±0.8
    mask = torch.ones(2, 2)
    rewards = core.kl_penalty_rewards(torch.tensor([1.0, 0.0]), torch.tensor([[0.5, 0.5], [-1.0, 0.0]]), mask, 0.1)
    rloo, _ = adv.estimate_advantages("rloo", rewards, torch.zeros(2, 2), mask, group_size=2, gamma=1.0, lam=1.0, group_eps=1e-9)
    close(rloo, [[0.8, 0.8], [-0.8, -0.8]])


def _loss(ratio, advantage, **kwargs):
    new = torch.log(torch.tensor([[ratio]]))
    return core.policy_loss(new, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), 0.2, **kwargs)


@pytest.mark.parametrize(
    "ratio, advantage, expected",
    [(1.5, 1.0, -1.28), (1.5, -1.0, 1.5), (0.5, 1.0, -0.5), (0.5, -1.0, 0.8), (1.25, 1.0, -1.25), (0.7, -1.0, 0.8)],
)
def test_asymmetric_clip(ratio, advantage, expected):
    loss, _ = _loss(ratio, advantage, clip_range_high=0.28)
    close(loss, expected)


@pytest.mark.parametrize(
    "ratio, advantage, expected, dual_frac",
    [(5.0, -1.0, 3.0, 1.0), (1.5, -1.0, 1.5, 0.0), (5.0, 1.0, -1.2, 0.0), (0.5, -1.0, 0.8, 0.0), (4.0, -2.0, 6.0, 1.0)],
)
def test_dual_clip(ratio, advantage, expected, dual_frac):
    # c = 3: a negative-advantage token loses at most −c·A (without it, ratio 5 and A = −1 would give 5)
    loss, stats = _loss(ratio, advantage, dual_clip=3.0)
    close(loss, expected)
    close(stats["dual_clip_frac"], dual_frac)


def test_dual_clip_off_by_default():
    loss, stats = _loss(5.0, -1.0)
    close(loss, 5.0)
    close(stats["dual_clip_frac"], 0.0)


def test_dual_clip_gradient_is_zero_when_active():
    new = torch.log(torch.tensor([[5.0]])).requires_grad_()
    loss, _ = core.policy_loss(new, torch.zeros(1, 1), -torch.ones(1, 1), torch.ones(1, 1), 0.2, dual_clip=3.0)
    loss.backward()
    assert new.grad.abs().item() == 0.0


def test_policy_loss_sum_norm_uses_the_constant():
    # two sequences with 2 and 1 tokens, ratio 1, A = 1 → token losses −1; sums −2 and −1 over constant 4
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = core.policy_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), mask, 0.2, "seq-mean-token-sum-norm", norm_constant=4.0)
    close(loss, -0.375)
