"""reward=weighted: composing reward.rewards, building WeightedRewards, and errors naming the key."""

import pytest
from hydra import compose, initialize_config_dir

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.rewards.functions import CompositeReward, CorrectnessReward, LengthPenaltyReward
from medrlvr.rewards.parsing import ParseRules
from medrlvr.rewards.weighted import WeightedRewards
from medrlvr.training.builders import build_reward

register_configs()


def reward_config(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=list(overrides))).reward


def test_the_weighted_choice_builds_its_rewards_with_their_weights():
    reward = build_reward(reward_config("reward=weighted", "reward.format=study"))
    assert isinstance(reward, WeightedRewards)
    assert reward.weights == {"default": 1.0, "composite": 0.5}
    assert reward.rewards == {
        "default": CorrectnessReward(rules=ParseRules(format="study")),
        "composite": CompositeReward(rules=ParseRules(format="study")),
    }


def test_entries_set_their_reward_parameters_and_keep_its_other_defaults():
    cfg = reward_config("reward=weighted", "reward.rewards=[{name:length_penalty,weight:2},{name:default,weight:1}]")
    reward = build_reward(cfg)
    assert list(reward.rewards) == ["length_penalty", "default"] and reward.weights["length_penalty"] == 2.0
    cfg = reward_config("reward=weighted", "reward.rewards=[{name:length_penalty,weight:1,penalty_coef:0.3}]")
    assert build_reward(cfg).rewards["length_penalty"] == LengthPenaltyReward(min_reasoning_words=20, penalty_coef=0.3)


@pytest.mark.parametrize(
    "rewards, key",
    [
        ("[{name:default,weight:1},{name:lenght_penalty,weight:1}]", r"reward\.rewards\[1\]\.name"),
        ("[{name:default,weight:1},{name:composite,weight:abc}]", r"reward\.rewards\[1\]\.weight"),
        ("[{name:default}]", r"reward\.rewards\[0\]\.weight"),
        ("[{name:default,weight:true}]", r"reward\.rewards\[0\]\.weight"),
        ("[{name:default,weight:1,penalty_coef:0.5}]", r"reward\.rewards\[0\]\.penalty_coef"),
        ("[{name:composite,weight:1,leak_penalty:-1}]", r"reward\.rewards\[0\]\.leak_penalty"),
        ("[{name:length_penalty,weight:1,penalty_coef:high}]", r"reward\.rewards\[0\]\.penalty_coef"),
        ("[{name:default,weight:1},{name:default,weight:2}]", r"reward\.rewards: each reward may appear once"),
        ("[]", r"reward\.rewards: reward=weighted needs"),
        ("[default]", r"reward\.rewards\[0\]: must be a mapping"),
    ],
)
def test_bad_entries_fail_naming_the_key(rewards, key):
    with pytest.raises(ConfigError, match=key):
        reward_config("reward=weighted", f"reward.rewards={rewards}")


def test_rewards_are_only_for_the_weighted_choice():
    with pytest.raises(ConfigError, match=r"reward\.rewards: only used by reward=weighted"):
        reward_config("reward=composite", "reward.rewards=[{name:default,weight:1}]")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["reward=weighted", "reward.penalty_coef=0.3"], r"reward\.penalty_coef: .*set it in an entry of reward\.rewards"),
        (["reward=weighted", "reward.correct_answer=2"], r"reward\.correct_answer: not a parameter of reward=weighted"),
        (["reward=default", "reward.leak_penalty=0.2"], r"reward\.leak_penalty: not a parameter of reward=default"),
        (["reward=length_penalty", "reward.structure_penalty=0.2"], r"reward\.structure_penalty: .*reward=length_penalty"),
    ],
)
def test_a_parameter_the_chosen_reward_does_not_read_is_refused_not_ignored(overrides, message):
    with pytest.raises(ConfigError, match=message):
        reward_config(*overrides)


def test_each_rewards_own_parameters_and_the_shared_ones_are_accepted():
    assert reward_config("reward=length_penalty", "reward.penalty_coef=0.3").penalty_coef == 0.3
    assert reward_config("reward=composite", "reward.leak_penalty=0.2", "reward.min_reasoning_words=5").leak_penalty == 0.2
    assert reward_config("reward=weighted", "reward.format=study", "reward.match_option_text=true").format == "study"
