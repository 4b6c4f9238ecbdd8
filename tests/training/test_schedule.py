"""Steps and batch size per algorithm: PPO uses data/trainer settings, SFT may set its own."""

import pytest

from medrlvr.config import AlgoConfig, ConfigError, DataConfig, SFTConfig, TrainConfig, TrainerConfig
from medrlvr.training.builders import rl_iterations, training_schedule


def test_ppo_uses_data_batch_size_and_trainer_max_steps():
    cfg = TrainConfig(algo=AlgoConfig(), data=DataConfig(batch_size=8), trainer=TrainerConfig(max_steps=20))
    assert training_schedule(cfg, num_train=336) == (8, 20)


def test_sft_batch_size_and_epochs_override():
    base = dict(data=DataConfig(batch_size=8), trainer=TrainerConfig(max_steps=20))
    assert training_schedule(TrainConfig(algo=SFTConfig(), **base), 336) == (8, 20)
    assert training_schedule(TrainConfig(algo=SFTConfig(batch_size=16), **base), 336) == (16, 20)
    assert training_schedule(TrainConfig(algo=SFTConfig(epochs=2), **base), 336) == (8, 84)
    assert training_schedule(TrainConfig(algo=SFTConfig(batch_size=10, epochs=1), **base), 336) == (10, 34)


@pytest.mark.parametrize("devices, num_nodes, iterations", [(8, 1, 100), (4, 2, 100), (1, 1, 796)])
def test_ppo_epochs_count_iterations_at_the_global_batch(devices, num_nodes, iterations):
    trainer = TrainerConfig(max_steps=20, max_epochs=10, devices=devices, num_nodes=num_nodes)
    cfg = TrainConfig(algo=AlgoConfig(), data=DataConfig(batch_size=128), trainer=trainer)
    # MedQA's 10,178 training questions, 10 passes at 128 prompts per process
    assert training_schedule(cfg, num_train=10_178) == (128, iterations)


def test_epochs_need_the_training_set_size():
    cfg = TrainConfig(algo=AlgoConfig(), trainer=TrainerConfig(max_epochs=1))
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        rl_iterations(cfg, None)


def test_bad_max_epochs_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        TrainerConfig(max_epochs=0)


def test_sft_counts_trainer_max_epochs_unless_it_sets_its_own():
    trainer = TrainerConfig(max_steps=20, max_epochs=10)
    assert training_schedule(TrainConfig(algo=SFTConfig(), data=DataConfig(batch_size=8), trainer=trainer), 336) == (8, 420)
    with_own = TrainConfig(algo=SFTConfig(epochs=2), data=DataConfig(batch_size=8), trainer=trainer)
    assert training_schedule(with_own, 336) == (8, 84)
