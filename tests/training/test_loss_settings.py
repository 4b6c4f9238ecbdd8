"""The PPO module hands each ``algo`` setting to the loss under its own name."""

from medrlvr.algo.assembly import LossSettings
from medrlvr.config import AlgoConfig
from medrlvr.training.ppo_module import loss_settings


def test_loss_settings_come_from_the_algo_config():
    algo = AlgoConfig(
        clip_range=0.2, clip_range_high=0.28, dual_clip=3.0, value_clip_range=0.4, value_loss_coef=0.25,
        entropy_coef=0.01, kl_loss_coef=0.05, kl_estimator="k3", loss_aggregation="seq-mean-token-mean", tis_cap=2.0,
    )
    assert loss_settings(algo, max_new_tokens=64) == LossSettings(
        clip_range_low=0.2, clip_range_high=0.28, dual_clip=3.0, value_clip_range=0.4, value_loss_coef=0.25,
        entropy_coef=0.01, kl_loss_coef=0.05, kl_estimator="k3", loss_aggregation="seq-mean-token-mean",
        norm_constant=64.0, tis_cap=2.0,
    )
