"""Steps and batch size per algorithm: PPO uses data/trainer settings, SFT may set its own."""

from medrlvr.config import AlgoConfig, DataConfig, SFTConfig, TrainConfig, TrainerConfig
from medrlvr.training.builders import training_schedule


def test_ppo_uses_data_batch_size_and_trainer_max_steps():
    cfg = TrainConfig(algo=AlgoConfig(), data=DataConfig(batch_size=8), trainer=TrainerConfig(max_steps=20))
    assert training_schedule(cfg, num_train=336) == (8, 20)


def test_sft_batch_size_and_epochs_override():
    base = dict(data=DataConfig(batch_size=8), trainer=TrainerConfig(max_steps=20))
    assert training_schedule(TrainConfig(algo=SFTConfig(), **base), 336) == (8, 20)
    assert training_schedule(TrainConfig(algo=SFTConfig(batch_size=16), **base), 336) == (16, 20)
    assert training_schedule(TrainConfig(algo=SFTConfig(epochs=2), **base), 336) == (8, 84)
    assert training_schedule(TrainConfig(algo=SFTConfig(batch_size=10, epochs=1), **base), 336) == (10, 34)
