"""Algorithm choices: each composes into the intended estimator and options; inconsistent options fail."""

import pytest
from hydra import compose, initialize_config_dir

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir

register_configs()


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=overrides))


@pytest.mark.parametrize(
    "algo, estimator, critic, kl_in_reward, aggregation, whiten",
    [
        ("ppo", "gae", True, True, "token-mean", True),
        ("grpo", "grpo", False, False, "seq-mean-token-mean", False),
        ("dr_grpo", "grpo_no_std", False, False, "seq-mean-token-sum-norm", False),
        ("rloo", "rloo", False, True, "token-mean", False),
        ("reinforce_pp", "reinforce_pp", False, True, "token-mean", True),
    ],
)
def test_each_algorithm_composes(algo, estimator, critic, kl_in_reward, aggregation, whiten):
    cfg = compose_train([f"algo={algo}"]).algo
    assert (cfg.name, cfg.advantage_estimator, cfg.uses_critic, cfg.kl_in_reward) == (algo, estimator, critic, kl_in_reward)
    assert (cfg.loss_aggregation, cfg.whiten_advantages) == (aggregation, whiten)
    assert cfg.clip_range_low == cfg.clip_range_high == cfg.clip_range and cfg.dual_clip is None
    assert not cfg.filter_equal_reward_groups


def test_grpo_options_override():
    cfg = compose_train(
        ["algo=grpo", "algo.kl_estimator=k2", "algo.clip_range_high=0.28", "algo.dual_clip=3", "algo.filter_equal_reward_groups=true"]
    ).algo
    assert (cfg.kl_estimator, cfg.clip_range_low, cfg.clip_range_high, cfg.dual_clip) == ("k2", 0.2, 0.28, 3.0)
    assert cfg.kl_loss_coef > 0 and cfg.kl_coef == 0 and cfg.filter_equal_reward_groups


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["algo=grpo", "algo.kl_coef=0.05"], "algo.kl_coef"),
        (["algo.dual_clip=1.0"], "algo.dual_clip"),
        (["algo.clip_range_low=1.5"], "algo.clip_range_low"),
        (["algo.clip_range_high=0"], "algo.clip_range_high"),
        (["algo.kl_loss_coef=-1"], "algo.kl_loss_coef"),
        (["algo.group_eps=0"], "algo.group_eps"),
        (["algo.advantage_estimator=vtrace"], "algo.advantage_estimator"),
        (["algo.name=dpo"], "algo.name"),
        (["algo=rloo", "rollout.num_samples=1", "algo.mini_batch_size=4"], "rollout.num_samples"),
        (["algo.filter_equal_reward_groups=true", "rollout.num_samples=1", "algo.mini_batch_size=4"], "rollout.num_samples"),
        (["model.critic=none"], "model.critic"),
        (["algo.adam_betas=[0.9,1.0]"], "algo.adam_betas"),
        (["algo.adam_betas=[0.9]"], "algo.adam_betas"),
        (["algo.lr_scheduler=linear"], "algo.lr_scheduler"),
        (["algo.lr_warmup_ratio=1.0"], "algo.lr_warmup_ratio"),
        (["algo.min_lr_ratio=-0.1"], "algo.min_lr_ratio"),
        (["trainer=deepspeed_zero2", "algo.separate_clipping=true"], "algo.separate_clipping"),
    ],
)
def test_inconsistent_algorithm_options_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_train(overrides)


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.advantage_estimator=vtrace", "algo.advantage_estimator: unknown 'vtrace'; choose one of gae, grpo, grpo_no_std, rloo, reinforce_pp"),
        ("algo.kl_estimator=k4", "algo.kl_estimator: unknown 'k4'; choose one of k1, k2, k3"),
        ("algo.loss_aggregation=sum", "algo.loss_aggregation: unknown 'sum'; choose one of token-mean, seq-mean-token-mean, seq-mean-token-sum-norm"),
    ],
)
def test_unregistered_names_fail_with_the_registered_choices(override, message):
    with pytest.raises(ConfigError) as error:
        compose_train([override])
    assert str(error.value) == message


def test_algorithm_name_must_be_the_estimators_algorithm():
    # algo=grpo with the GAE estimator would train PPO with a critic and be labelled "RLVR (grpo)"
    message = r"algo\.name: is 'grpo', which uses algo\.advantage_estimator=grpo, but the estimator is 'gae' \(ppo\)"
    with pytest.raises(ConfigError, match=message):
        compose_train(["algo=grpo", "algo.advantage_estimator=gae"])
    with pytest.raises(ConfigError, match="choose algo=dr_grpo"):
        compose_train(["algo=ppo", "algo.advantage_estimator=grpo_no_std", "model.critic=none"])


def test_critic_free_algorithm_accepts_critic_none():
    cfg = compose_train(["algo=grpo", "model.critic=none"])
    assert cfg.model.critic == "none" and not cfg.algo.uses_critic
