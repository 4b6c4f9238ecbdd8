"""Multi-process wiring without launching processes: the DeepSpeed config the trainer options generate (checked by
DeepSpeed's own parser), the Lightning strategy, precision plugin and cluster environments they give, prompt
sharding and metric combination, the study's experiment."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.plugins.precision import DeepSpeedPrecision
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_only

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.bundled import load_bundled
from medrlvr.data.schema import ExampleBatch
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders
from medrlvr.training.distributed import combine_metrics, rank_order
from medrlvr.training.strategies import (
    AccumulatingDeepSpeedStrategy,
    build_strategy,
    deepspeed_config,
    full_deepspeed_config,
    micro_batch_size,
)

register_configs()


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=list(overrides)))


def test_zero2_config_is_bf16_with_clipping_and_accepted_by_deepspeed():
    deepspeed_runtime = pytest.importorskip("deepspeed.runtime.config")
    cfg = compose_train("trainer=deepspeed_zero2", "algo.max_grad_norm=0.7", "algo.mini_batch_size=4")
    config = deepspeed_config(cfg.trainer, cfg.algo.max_grad_norm, micro_batch_size(cfg))
    assert config["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in config["zero_optimization"]
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["gradient_clipping"] == 0.7 and config["train_micro_batch_size_per_gpu"] == 4
    assert cfg.model.gradient_checkpointing
    parsed = deepspeed_runtime.DeepSpeedConfig(config)
    assert (parsed.zero_optimization_stage, parsed.gradient_clipping, parsed.bfloat16_config.enabled) == (2, 0.7, True)


def test_micro_batches_become_deepspeeds_accumulation_steps():
    deepspeed_runtime = pytest.importorskip("deepspeed.runtime.config")
    cfg = compose_train("trainer=deepspeed_zero2", "algo.mini_batch_size=16", "algo.micro_batch_size=4")
    config = full_deepspeed_config(cfg)
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (4, 4)
    parsed = deepspeed_runtime.DeepSpeedConfig(config)
    assert (parsed.gradient_accumulation_steps, parsed.train_batch_size) == (4, 16)  # one process
    assert isinstance(build_strategy(cfg), AccumulatingDeepSpeedStrategy)


def test_zero3_config_partitions_and_offloads_on_request():
    deepspeed_runtime = pytest.importorskip("deepspeed.runtime.config")
    cfg = compose_train(
        "trainer=deepspeed_zero3", "trainer.deepspeed.offload_optimizer=true", "trainer.deepspeed.offload_parameters=true"
    )
    zero = deepspeed_config(cfg.trainer, 1.0, 8)["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert deepspeed_runtime.DeepSpeedConfig(deepspeed_config(cfg.trainer, 1.0, 8)).zero_optimization_stage == 3


def test_full_precision_disables_both_half_modes():
    cfg = compose_train("trainer=deepspeed_zero2", "trainer.precision=32-true")
    config = deepspeed_config(cfg.trainer, 1.0, 1)
    assert not config["bf16"]["enabled"] and not config["fp16"]["enabled"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer=deepspeed_zero2", "trainer.deepspeed.offload_parameters=true"], "trainer.deepspeed.offload_parameters"),
        (["trainer=deepspeed_zero2", "trainer.deepspeed.stage=4"], "trainer.deepspeed.stage"),
        (["trainer.strategy=fsdp"], "trainer.strategy"),
        (["trainer.devices=0"], "trainer.devices"),
        (["trainer.num_nodes=0"], "trainer.num_nodes"),
        (["trainer=ddp", "algo.filter_equal_reward_groups=true"], "algo.filter_equal_reward_groups"),
        (["trainer=deepspeed_zero3", "algo=sft"], "trainer.deepspeed.stage"),
    ],
)
def test_bad_distributed_settings_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose_train(*overrides)


def test_deepspeed_strategy_and_precision_plugin_as_lightning_composes_them():
    cfg = compose_train("trainer=deepspeed_zero2")
    strategy = build_strategy(cfg)
    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config == deepspeed_config(cfg.trainer, cfg.algo.max_grad_norm, micro_batch_size(cfg))
    # the trainer composes on a CPU (Lightning refuses it only when fit starts)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, precision=cfg.trainer.precision, logger=False)
    assert isinstance(trainer.precision_plugin, DeepSpeedPrecision)
    assert trainer.precision_plugin.precision == "bf16-mixed"
    assert trainer.strategy is strategy and trainer.world_size == 2


def test_ddp_and_auto_strategies():
    assert isinstance(build_strategy(compose_train("trainer=ddp")), DDPStrategy)
    assert build_strategy(compose_train()) == "auto"


def test_torchrun_environment_sets_the_ranks(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it process-wide
    env = {"TORCHELASTIC_RUN_ID": "x", "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "GROUP_RANK": "2",
           "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(accelerator="cpu", devices=2, num_nodes=4, strategy=DDPStrategy(), logger=False)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (5, 1, 2, 8)


def test_slurm_environment_sets_the_ranks(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it process-wide
    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "1", "SLURM_JOB_NAME": "medrlvr", "SLURM_NODELIST": "node[1-4]", "SLURM_JOB_ID": "7"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trainer = L.Trainer(accelerator="cpu", devices=2, num_nodes=4, strategy=DDPStrategy(), logger=False)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 8)


def test_rank_order_gives_each_process_its_slice_of_every_block():
    order = list(range(12))
    assert rank_order(order, batch_size=2, rank=0, world_size=3) == [0, 1, 6, 7]
    assert rank_order(order, batch_size=2, rank=2, world_size=3) == [4, 5, 10, 11]
    assert rank_order(order, batch_size=3, rank=0, world_size=1) == order


def test_prompt_loader_shards_one_global_order_across_processes():
    examples = load_bundled("train")
    whole = [[e.id for e in batch] for batch in prompt_loader(examples, 4, 3, seed=7)]
    shares = [[[e.id for e in batch] for batch in prompt_loader(examples, 2, 3, 7, 0, rank, 2)] for rank in (0, 1)]
    assert [a + b for a, b in zip(*shares)] == whole
    resumed = [[e.id for e in batch] for batch in prompt_loader(examples, 2, 3, 7, 1, 1, 2)]
    assert resumed == shares[1][1:]


def test_combine_metrics_means_maxima_sums_and_missing_keys():
    per_rank = [
        {"reward/mean": 1.0, "response/tokens_max": 10.0, "perf/generate_tokens_per_s": 30.0, "format_error/no_letter": 0.5},
        {"reward/mean": 0.0, "response/tokens_max": 12.0, "perf/generate_tokens_per_s": 20.0},
    ]
    assert combine_metrics(per_rank) == {
        "reward/mean": 0.5, "response/tokens_max": 12.0, "perf/generate_tokens_per_s": 50.0, "format_error/no_letter": 0.25
    }


def test_deepspeed_precision_plugin_leaves_example_batches_alone():
    examples = load_bundled("train")[:2]
    batch = DeepSpeedPrecision("bf16-mixed").convert_input(ExampleBatch(examples))
    assert list(batch) == examples and len(batch) == 2 and batch[1] is examples[1]


def test_zero3_defers_building_the_models_to_configure_model(tokenizer):
    cfg = compose_train("experiment=smoke", "trainer=deepspeed_zero3")
    module, engine = builders.build_module(cfg, tokenizer, builders.build_prompt_builder(cfg.data.prompt, tokenizer))
    assert module.model is None and module.engine is None and engine is None
    eager, eager_engine = builders.build_module(
        compose_train("experiment=smoke", "trainer=deepspeed_zero2"), tokenizer,
        builders.build_prompt_builder(cfg.data.prompt, tokenizer),
    )
    assert eager.model is not None and eager_engine.model is eager.model.actor
    eager.configure_model()  # already built: nothing changes
    assert eager_engine.model is eager.model.actor


@pytest.mark.parametrize("name", ["med_rlvr", "med_rlvr_qwen3b"])
def test_study_experiment_composes_and_validates(name):
    cfg = compose_train(f"experiment={name}")
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-3B" and cfg.model.lora_rank == 0 and cfg.model.critic == "separate"
    assert (cfg.data.name, cfg.data.variant, cfg.data.train_split, cfg.data.eval_split) == ("medqa", "5_options", "train", "test")
    assert cfg.data.prompt.system_prompt == "r1" and not cfg.data.prompt.one_shot
    assert (cfg.reward.name, cfg.reward.format_error, cfg.reward.wrong_answer, cfg.reward.correct_answer) == ("default", -1, 0, 1)
    assert cfg.algo.advantage_estimator == "gae" and cfg.algo.kl_in_reward and cfg.algo.kl_coef == 0.01
    assert (cfg.algo.actor_lr, cfg.algo.critic_lr) == (5e-7, 9e-6)
    assert (cfg.trainer.strategy, cfg.trainer.deepspeed.stage, cfg.trainer.precision) == ("deepspeed", 2, "bf16-mixed")
    assert cfg.model.gradient_checkpointing and cfg.model.dtype == "bfloat16"
    assert isinstance(build_strategy(cfg), DeepSpeedStrategy)


def test_study_experiment_prints_from_the_cli(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "--cfg", "job", "experiment=med_rlvr"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "name_or_path: Qwen/Qwen2.5-3B" in result.stdout and "strategy: deepspeed" in result.stdout


def test_slurm_launcher_config_follows_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
