"""experiment=med_rlvr and its SFT baseline experiment=med_rlvr_sft: same model, data, prompt and DeepSpeed."""

import subprocess
import sys

from hydra import compose, initialize_config_dir

from medrlvr.config import AlgoConfig, SFTConfig, register_configs, to_train_config
from medrlvr.paths import config_dir

register_configs()


def train_config(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=overrides))


def test_med_rlvr_keeps_the_study_ppo_settings():
    algo = train_config(["experiment=med_rlvr"]).algo
    assert isinstance(algo, AlgoConfig) and algo.name == "ppo"
    settings = (algo.actor_lr, algo.critic_lr, algo.lam, algo.value_clip_range, algo.mini_batch_size)
    assert settings == (5e-7, 9e-6, 0.95, 0.2, 16)
    openrlhf = (algo.loss_aggregation, tuple(algo.adam_betas), algo.lr_scheduler, algo.lr_warmup_ratio, algo.min_lr_ratio)
    assert openrlhf == ("seq-mean-token-mean", (0.9, 0.95), "cosine_with_min_lr", 0.03, 0.1)


def test_sft_baseline_shares_everything_but_the_algorithm():
    ppo, sft = train_config(["experiment=med_rlvr"]), train_config(["experiment=med_rlvr_sft"])
    assert isinstance(sft.algo, SFTConfig)
    assert (sft.algo.lr, sft.algo.batch_size, sft.algo.epochs) == (5e-6, 16, 2)
    for key in ("model", "data", "reward", "rollout", "trainer"):
        assert getattr(sft, key) == getattr(ppo, key), key
    assert (sft.trainer.strategy, sft.trainer.deepspeed.stage) == ("deepspeed", 2)
    assert sft.model.name_or_path == "Qwen/Qwen2.5-3B"
    assert "sft" in sft.tags and ppo.data.eval_sets == {"mmlu_pro_health": {}}  # MMLU-Pro health before and after


def test_med_rlvr_composes_with_the_plain_sft_algorithm():
    cfg = train_config(["experiment=med_rlvr", "algo=sft"])
    assert isinstance(cfg.algo, SFTConfig) and cfg.data.prompt.template == "r1_zero"


def test_sft_experiment_prints_its_job_config():
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "experiment=med_rlvr_sft", "--cfg", "job"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: sft" in result.stdout and "lr: 5.0e-06" in result.stdout and "template: r1_zero" in result.stdout


def test_dynamics_cpu_is_the_default_run_longer_under_the_study_format():
    default, dynamics = train_config([]), train_config(["experiment=dynamics_cpu"])
    assert (dynamics.reward.format, dynamics.trainer.max_steps, dynamics.logger.experiment_name) == ("study", 40, "dynamics_cpu")
    for key in ("model", "data", "algo", "rollout", "analysis"):
        assert getattr(dynamics, key) == getattr(default, key), key
    assert dynamics.reward.name == default.reward.name == "default" and default.reward.format == "strict"
    assert dynamics.seed == default.seed == 42
