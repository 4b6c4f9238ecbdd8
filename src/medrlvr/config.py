"""Structured configs: the schema behind every Hydra group.

Hydra merges the YAML files of ``conf/`` onto these dataclasses, so an unknown key or a wrong type
fails at start naming the key. Range checks run in ``__post_init__`` when :func:`to_train_config`
turns the composed config into objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class ModelConfig:
    name_or_path: str = "bundled:smollm2-135m-instruct"
    dtype: str = "float32"
    lora_rank: int = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_top_layers: int = 0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    critic: str = "separate"
    gradient_checkpointing: bool = False
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", f"unknown dtype {self.dtype!r}")
        _check(self.lora_rank >= 0, "model.lora_rank", f"must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        _check(self.lora_top_layers >= 0, "model.lora_top_layers", "must be >= 0 (0 = every layer)")
        _check(self.critic in ("separate", "shared"), "model.critic", f"must be 'separate' or 'shared', got {self.critic!r}")


@dataclass
class PromptConfig:
    system_prompt: str = "r1"
    one_shot: bool = True
    reminder: bool = True
    response_prefix: str = "<think>"


@dataclass
class DataConfig:
    name: str = "bundled"
    train_split: str = "train"
    eval_split: str = "validation"
    batch_size: int = 8
    option_count: Optional[int] = None
    eval_size: int = 64
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(
            self.option_count is None or 2 <= self.option_count <= 10,
            "data.option_count",
            f"must be between 2 and 10 (letters A-J), got {self.option_count}",
        )
        _check(self.eval_size >= 0, "data.eval_size", f"must be >= 0, got {self.eval_size}")


@dataclass
class RewardConfig:
    name: str = "default"
    format_error: float = -1.0
    wrong_answer: float = 0.0
    correct_answer: float = 1.0
    min_reasoning_words: int = 0
    penalty_coef: float = 0.0

    def __post_init__(self) -> None:
        _check(self.name in ("default", "length_penalty"), "reward.name", f"unknown reward {self.name!r}")
        _check(self.min_reasoning_words >= 0, "reward.min_reasoning_words", "must be >= 0")
        _check(self.penalty_coef >= 0, "reward.penalty_coef", "must be >= 0")


@dataclass
class AlgoConfig:
    name: str = "ppo"
    kl_coef: float = 0.01
    kl_estimator: str = "k1"
    clip_range: float = 0.2
    value_clip_range: Optional[float] = 0.5
    gamma: float = 1.0
    lam: float = 1.0
    ppo_epochs: int = 1
    mini_batch_size: int = 8
    actor_lr: float = 1e-6
    critic_lr: float = 9e-6
    weight_decay: float = 0.0
    value_loss_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True
    loss_aggregation: str = "token-mean"

    def __post_init__(self) -> None:
        _check(self.name == "ppo", "algo.name", f"unknown algorithm {self.name!r}")
        _check(self.kl_coef >= 0, "algo.kl_coef", f"must be >= 0, got {self.kl_coef}")
        _check(self.kl_estimator in ("k1", "k2", "k3"), "algo.kl_estimator", f"must be k1, k2 or k3, got {self.kl_estimator!r}")
        _check(0 < self.clip_range < 1, "algo.clip_range", f"must be in (0, 1), got {self.clip_range}")
        _check(self.value_clip_range is None or self.value_clip_range > 0, "algo.value_clip_range", "must be > 0 or null")
        _check(0 <= self.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        _check(0 <= self.lam <= 1, "algo.lam", f"must be in [0, 1], got {self.lam}")
        _check(self.ppo_epochs >= 1, "algo.ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
        _check(self.mini_batch_size >= 1, "algo.mini_batch_size", f"must be >= 1, got {self.mini_batch_size}")
        _check(self.actor_lr > 0 and self.critic_lr > 0, "algo.actor_lr/critic_lr", "learning rates must be > 0")
        _check(self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0")
        _check(
            self.loss_aggregation in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"),
            "algo.loss_aggregation",
            f"unknown mode {self.loss_aggregation!r}",
        )


@dataclass
class RolloutConfig:
    backend: str = "hf"
    num_samples: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] = field(default_factory=lambda: ["</answer>"])
    generation_batch_size: int = 64
    eval_max_new_tokens: int = 96

    def __post_init__(self) -> None:
        _check(self.backend == "hf", "rollout.backend", f"unknown backend {self.backend!r}")
        _check(self.num_samples >= 1, "rollout.num_samples", f"must be >= 1, got {self.num_samples}")
        _check(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature > 0, "rollout.temperature", f"must be > 0 for training rollouts, got {self.temperature}")
        _check(0 < self.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class TrainerConfig:
    max_steps: int = 20
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_threads: int = 0
    log_samples_every: int = 5
    eval_before: bool = True
    eval_after: bool = True
    save_model: bool = True
    output_dir: Optional[str] = None
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    max_bad_updates: int = 3

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, "trainer.max_steps", f"must be >= 1, got {self.max_steps}")
        _check(self.num_threads >= 0, "trainer.num_threads", "must be >= 0 (0 = all cores)")
        _check(self.log_samples_every >= 0, "trainer.log_samples_every", "must be >= 0 (0 = never)")
        _check(self.checkpoint_every >= 0, "trainer.checkpoint_every", "must be >= 0 (0 = only at the end)")
        _check(self.keep_checkpoints >= 1, "trainer.keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(self.max_bad_updates >= 1, "trainer.max_bad_updates", f"must be >= 1, got {self.max_bad_updates}")


@dataclass
class LoggerConfig:
    tracking_uri: Optional[str] = None
    experiment_name: str = "medrlvr"
    run_name: Optional[str] = None
    log_model: bool = True
    samples_per_table: int = 16


@dataclass
class AnalysisConfig:
    """Thresholds of the reasoning-stage classifier (:mod:`medrlvr.analysis`); lengths count words."""

    short_reasoning_words: int = 8
    verbose_reasoning_words: int = 100
    leak_window_words: int = 6
    outside_reasoning_words: int = 5
    repetition_ngram: int = 4
    repetition_threshold: float = 0.3
    exploit_phase_fraction: float = 0.5
    boundary_min_iterations: int = 3
    examples_per_stage: int = 3

    def __post_init__(self) -> None:
        _check(self.short_reasoning_words >= 1, "analysis.short_reasoning_words", "must be >= 1")
        _check(
            self.verbose_reasoning_words > self.short_reasoning_words,
            "analysis.verbose_reasoning_words",
            f"must exceed analysis.short_reasoning_words ({self.short_reasoning_words}), got {self.verbose_reasoning_words}",
        )
        _check(self.leak_window_words >= 1, "analysis.leak_window_words", "must be >= 1")
        _check(self.outside_reasoning_words >= 1, "analysis.outside_reasoning_words", "must be >= 1")
        _check(self.repetition_ngram >= 1, "analysis.repetition_ngram", "must be >= 1")
        _check(0 < self.repetition_threshold <= 1, "analysis.repetition_threshold", "must be in (0, 1]")
        _check(0 < self.exploit_phase_fraction <= 1, "analysis.exploit_phase_fraction", "must be in (0, 1]")
        _check(self.boundary_min_iterations >= 1, "analysis.boundary_min_iterations", "must be >= 1")
        _check(self.examples_per_stage >= 0, "analysis.examples_per_stage", "must be >= 0")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 42
    tags: list[str] = field(default_factory=list)
    resume: Optional[str] = None

    def __post_init__(self) -> None:
        samples = self.data.batch_size * self.rollout.num_samples
        _check(
            self.algo.mini_batch_size <= samples,
            "algo.mini_batch_size",
            f"{self.algo.mini_batch_size} exceeds the completions per iteration "
            f"(data.batch_size × rollout.num_samples = {samples})",
        )


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can start its defaults list with ``train_schema``."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Validate a composed config (range checks included) and return it as dataclasses."""
    obj: Any = OmegaConf.to_object(cfg)
    return obj


def config_dir() -> Path:
    """The ``conf/`` folder: ``$MEDRLVR_CONFIG_DIR``, else the copy installed in the package, else the repo's."""
    if "MEDRLVR_CONFIG_DIR" in os.environ:
        return Path(os.environ["MEDRLVR_CONFIG_DIR"]).resolve()
    installed = Path(__file__).parent / "conf"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "conf"


def default_tracking_uri() -> str:
    """SQLite store in the working directory (MLflow 3 refuses the old ``./mlruns`` file store)."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
