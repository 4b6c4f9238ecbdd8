"""Build the run's components (tokenizer, models, rollout engine, prompts, rewards, logger) from the config."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.loggers import MLFlowLogger
from transformers import PreTrainedTokenizerBase

from medrlvr.config import LoggerConfig, ModelConfig, PromptConfig, RewardConfig, RolloutConfig, default_tracking_uri
from medrlvr.data.prompts import FORMAT_REMINDER, R1_SYSTEM_PROMPT, PromptBuilder
from medrlvr.models.actor_critic import ActorCritic, LoraSettings
from medrlvr.models.loading import load_causal_lm, load_tokenizer
from medrlvr.rewards.functions import CorrectnessReward, LengthPenaltyReward
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training.tracking import ResumableMLFlowLogger

SYSTEM_PROMPTS = {"r1": R1_SYSTEM_PROMPT, "none": ""}


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(cfg.name_or_path, _cache(cfg))


def build_actor_critic(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> ActorCritic:
    """Policy LM (optionally with LoRA), its reference and a critic initialised from it."""
    causal_lm = load_causal_lm(cfg.name_or_path, tokenizer, getattr(torch, cfg.dtype), _cache(cfg), seed)
    lora = LoraSettings(
        cfg.lora_rank, cfg.lora_top_layers, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_target_modules)
    )
    return ActorCritic(causal_lm, lora, cfg.critic, cfg.gradient_checkpointing)  # type: ignore[arg-type]


def build_rollout_engine(cfg: RolloutConfig, model: ActorCritic, tokenizer: PreTrainedTokenizerBase) -> HFRolloutEngine:
    return HFRolloutEngine(model.actor, tokenizer, batch_size=cfg.generation_batch_size)


def build_prompt_builder(cfg: PromptConfig, tokenizer: PreTrainedTokenizerBase) -> PromptBuilder:
    if cfg.system_prompt in SYSTEM_PROMPTS:
        system_prompt = SYSTEM_PROMPTS[cfg.system_prompt]
    else:
        system_prompt = cfg.system_prompt
    return PromptBuilder(
        tokenizer,
        system_prompt=system_prompt,
        one_shot=cfg.one_shot,
        reminder=FORMAT_REMINDER if cfg.reminder else "",
        response_prefix=cfg.response_prefix,
    )


def build_reward(cfg: RewardConfig) -> CorrectnessReward:
    if cfg.name == "length_penalty":
        return LengthPenaltyReward(
            cfg.format_error, cfg.wrong_answer, cfg.correct_answer, cfg.min_reasoning_words, cfg.penalty_coef
        )
    return CorrectnessReward(cfg.format_error, cfg.wrong_answer, cfg.correct_answer)


def build_logger(cfg: LoggerConfig, tags: dict[str, str], run_id: str | None = None) -> MLFlowLogger:
    """MLflow logger on ``logger.tracking_uri`` (default: ``sqlite:///$PWD/mlflow.db``, artifacts beside it);
    ``run_id`` continues that run."""
    uri = cfg.tracking_uri or default_tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return ResumableMLFlowLogger(
        experiment_name=cfg.experiment_name,
        run_name=cfg.run_name,
        tracking_uri=uri,
        tags=tags,
        artifact_location=artifact_location,
        run_id=run_id,
    )


def _cache(cfg: ModelConfig) -> Path | None:
    return Path(cfg.cache_dir) if cfg.cache_dir else None
