"""The optimizer's conventions: Adam betas from the config."""

import pytest
from hydra import compose, initialize_config_dir

from medrlvr.config import TrainConfig, config_dir, register_configs, to_train_config
from medrlvr.training import builders
from medrlvr.training.ppo_module import PPOModule

register_configs()


def train_config(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=list(overrides)))


def smoke_config(*overrides: str) -> TrainConfig:
    return train_config("experiment=smoke", *overrides)


def smoke_module(cfg: TrainConfig) -> PPOModule:
    tokenizer = builders.build_tokenizer(cfg.model)
    module, _ = builders.build_module(cfg, tokenizer, builders.build_prompt_builder(cfg.data.prompt, tokenizer))
    return module  # type: ignore[return-value]


@pytest.mark.parametrize("overrides, betas", [([], (0.9, 0.999)), (["algo.adam_betas=[0.9,0.95]"], (0.9, 0.95))])
def test_adam_betas_reach_every_parameter_group(overrides, betas):
    optimizer = smoke_module(smoke_config(*overrides)).configure_optimizers()
    assert [group["betas"] for group in optimizer.param_groups] == [betas, betas]


def test_med_rlvr_uses_openrlhf_betas():
    assert train_config("experiment=med_rlvr", "model=tiny").algo.adam_betas == [0.9, 0.95]
