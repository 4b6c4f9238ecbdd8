"""Build the run's components (tokenizer, models, rollout engine, prompts, rewards, module, logger) from the config."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from transformers import PreTrainedTokenizerBase

from medrlvr.config import LoggerConfig, ModelConfig, PromptConfig, RewardConfig, RolloutConfig, SFTConfig, TrainConfig, TrainerConfig
from medrlvr.paths import artifact_location, default_tracking_uri
from medrlvr.data.prompts import FORMAT_REMINDER, R1_SYSTEM_PROMPT, PromptBuilder
from medrlvr.models.actor_critic import ActorCritic, LoraSettings, with_lora
from medrlvr.data.schema import MCQExample
from medrlvr.models.loading import context_length_of, load_causal_lm, load_tokenizer
from medrlvr.models.transformers_api import enable_activation_checkpointing
from medrlvr.rewards.base import RewardFn
from medrlvr.rewards.functions import (
    REWARDS,
    CompositeReward,
    CorrectnessReward,
    LengthPenaltyReward,
    PartialFormatReward,
)
from medrlvr.rewards.parsing import ParseRules
from medrlvr.rewards.weighted import WeightedRewards
from medrlvr.rollout.base import EngineBuilder, RolloutEngine
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.rollout.placement import EnginePlacement, trainer_placement
from medrlvr.training.numerics import NumericsGuard
from medrlvr.training.optim import optimizer_steps
from medrlvr.training.ppo_module import PPOModule
from medrlvr.training.sft_module import SFTModule
from medrlvr.training.strategies import hf_zero3_context, zero3
from medrlvr.sweeping.tags import hydra_task_overrides, trial_run_name, trial_tags
from medrlvr.training.run_tracking import ResumableMLFlowLogger

SYSTEM_PROMPTS = {"r1": R1_SYSTEM_PROMPT, "none": ""}


def build_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    return load_tokenizer(cfg.name_or_path, _cache(cfg))


def lora_settings(cfg: ModelConfig) -> LoraSettings:
    """The ``model.lora_*`` keys; PPO's actor and the SFT policy get the same adapters."""
    return LoraSettings(
        rank=cfg.lora_rank,
        top_layers=cfg.lora_top_layers,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        target_modules=tuple(cfg.lora_target_modules),
    )


def build_actor_critic(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int, with_critic: bool = True, reload: bool = False
) -> ActorCritic:
    """Policy LM (optionally with LoRA), its reference and, ``with_critic``, a critic initialised from it.

    ``reload`` loads the model again for the critic's trunk and the reference instead of deep-copying it
    (needed under DeepSpeed ZeRO-3, whose partitioned parameters cannot be copied).
    """

    def load() -> torch.nn.Module:
        return load_causal_lm(cfg.name_or_path, tokenizer, getattr(torch, cfg.dtype), _cache(cfg), seed)

    critic = cfg.critic if with_critic else "none"
    return ActorCritic(  # type: ignore[arg-type]
        load(),
        lora_settings(cfg),
        critic,
        cfg.gradient_checkpointing,
        load if reload else None,
        data_dependent_passes=not reload,
        logits_chunk_size=cfg.logits_chunk_size,
    )


def build_policy(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> torch.nn.Module:
    """The policy LM alone (optionally with LoRA), for algorithms without critic or reference (SFT)."""
    causal_lm = load_causal_lm(cfg.name_or_path, tokenizer, getattr(torch, cfg.dtype), _cache(cfg), seed)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(causal_lm)
    policy = with_lora(causal_lm, lora_settings(cfg))
    if cfg.gradient_checkpointing and cfg.lora_rank > 0:
        causal_lm.enable_input_require_grads()
    return policy


def build_rollout_engine(
    cfg: RolloutConfig,
    policy: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    synced_gpus: bool = False,
    placement: EnginePlacement | None = None,
    capture_layer: int = 0,
) -> RolloutEngine:
    """``hf``: generation from ``policy`` itself (colocated: updates are visible without copying weights),
    keeping the inputs of decoder layer ``capture_layer`` when it is > 0 (the first trained layer, whose
    inputs training then takes from the rollout); ``vllm``: a vLLM engine in this process holding a copy of
    ``policy``'s weights, pushed in place after every update (vllm is imported only then), placed as
    ``placement`` says (default: torchrun's variables or a process of its own)."""
    if cfg.backend == "vllm":
        from medrlvr.rollout.vllm import VLLMRolloutEngine

        return VLLMRolloutEngine(policy, tokenizer, cfg.vllm, seed, placement)
    return HFRolloutEngine(
        policy, tokenizer, batch_size=cfg.generation_batch_size, synced_gpus=synced_gpus, capture_layer=capture_layer
    )


def engine_builder(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> EngineBuilder:
    """Builds the rollout engine of a training run's policy once fit has started, placed by the Trainer's ranks."""

    def build(policy: torch.nn.Module, trainer: L.Trainer) -> RolloutEngine:
        placement = trainer_placement(trainer, cfg.rollout.vllm.tensor_parallel_size)
        return build_rollout_engine(cfg.rollout, policy, tokenizer, cfg.seed, zero3(cfg.trainer), placement)

    return build


def build_module(
    cfg: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptBuilder,
    first_iteration: int = 0,
    num_train: int | None = None,
) -> tuple[PPOModule | SFTModule, RolloutEngine | None]:
    """The LightningModule of ``algo.name`` (an RL algorithm or ``sft``) and the rollout engine generating from
    its policy; either resumes counting after ``first_iteration``; an RL module's learning-rate schedule spans
    the run's :func:`rl_iterations` (``num_train`` training questions are needed with ``trainer.max_epochs``).

    A vLLM engine joins the run's process group, which exists only once fit has started (Lightning's own
    launcher starts the other processes then), so the module builds it in ``on_fit_start`` and None is
    returned in its place. Under DeepSpeed ZeRO-3 the RL module also builds its models in ``configure_model``
    (partitioned as they are created, during ``fit``), so no engine exists before fit either.
    """
    in_fit = cfg.rollout.backend == "vllm"
    guard = NumericsGuard(cfg.trainer.max_bad_updates)
    if isinstance(cfg.algo, SFTConfig):
        policy = build_policy(cfg.model, tokenizer, cfg.seed)
        engine = None if in_fit else build_rollout_engine(cfg.rollout, policy, tokenizer, cfg.seed)
        module = SFTModule(
            policy, engine, prompts, tokenizer, cfg.algo, cfg.model.logits_chunk_size, engine_builder(cfg, tokenizer),
            guard, first_iteration,
        )
        return module, engine
    algo = cfg.algo

    def build_model() -> ActorCritic:
        with hf_zero3_context(cfg):
            return build_actor_critic(cfg.model, tokenizer, cfg.seed, algo.uses_critic, reload=zero3(cfg.trainer))

    model = None if zero3(cfg.trainer) else build_model()
    engine = None
    if model is not None and not in_fit:
        engine = build_rollout_engine(cfg.rollout, model.actor, tokenizer, cfg.seed, capture_layer=model.frozen_layers)
    module = PPOModule(
        model, engine, prompts, build_reward(cfg.reward), algo, cfg.rollout, cfg.seed, guard, first_iteration,
        build_model, engine_builder(cfg, tokenizer),
        optimizer_steps(algo, cfg.data.batch_size, cfg.rollout.num_samples, rl_iterations(cfg, num_train)),
    )
    return module, engine


def process_count(cfg: TrainerConfig) -> int:
    """Training processes: ``devices`` per node (-1 = every visible GPU) × ``num_nodes``."""
    devices = cfg.devices if cfg.devices > 0 else torch.cuda.device_count()
    return devices * cfg.num_nodes


def rl_iterations(cfg: TrainConfig, num_train: int | None) -> int:
    """``trainer.max_steps``, or with ``trainer.max_epochs`` the iterations passing that many times over the
    ``num_train`` training questions at the global batch (``data.batch_size`` × processes), rounded up."""
    if cfg.trainer.max_epochs is None:
        return cfg.trainer.max_steps
    if num_train is None:
        raise ValueError("trainer.max_epochs needs the number of training questions")
    return math.ceil(cfg.trainer.max_epochs * num_train / (cfg.data.batch_size * process_count(cfg.trainer)))


def training_schedule(cfg: TrainConfig, num_train: int) -> tuple[int, int]:
    """(questions per step per process, steps): ``data.batch_size`` and :func:`rl_iterations`, unless SFT sets
    its own ``algo.batch_size`` or passes over the ``num_train`` training questions (``algo.epochs``, else
    ``trainer.max_epochs``)."""
    if not isinstance(cfg.algo, SFTConfig):
        return cfg.data.batch_size, rl_iterations(cfg, num_train)
    batch_size = cfg.algo.batch_size or cfg.data.batch_size
    epochs = cfg.algo.epochs or cfg.trainer.max_epochs
    return batch_size, math.ceil(epochs * num_train / batch_size) if epochs else cfg.trainer.max_steps


def model_context(model: ModelConfig, rollout: RolloutConfig) -> int | None:
    """Tokens a prompt and its completion may take together: ``rollout.vllm.max_model_len`` under vLLM when set,
    else the model's context (None when its config does not say)."""
    if rollout.backend == "vllm" and rollout.vllm.max_model_len:
        return rollout.vllm.max_model_len
    return context_length_of(model.name_or_path, _cache(model))


def prompt_token_counter(prompts: PromptBuilder) -> Callable[[MCQExample], int]:
    """The number of tokens of an example's prompt, as the rollout engines tokenize it."""
    return lambda example: len(prompts.tokenizer(prompts(example), add_special_tokens=False).input_ids)


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
        template=cfg.template,
        style=cfg.style,
    )


def parse_rules(cfg: RewardConfig) -> ParseRules:
    """How training rewards read completions; evaluation reads them the same way."""
    return ParseRules(format=cfg.format, match_option_text=cfg.match_option_text)


def build_reward(cfg: RewardConfig) -> RewardFn:
    """The reward ``reward.name`` names, with its parameters; ``weighted`` sums ``reward.rewards`` with weights."""
    scores = dict(format_error=cfg.format_error, wrong_answer=cfg.wrong_answer, correct_answer=cfg.correct_answer)
    rules = parse_rules(cfg)
    if cfg.name == "weighted":
        return WeightedRewards(
            rewards={
                e["name"]: REWARDS[e["name"]](rules=rules, **{k: v for k, v in e.items() if k not in ("name", "weight")})
                for e in cfg.rewards
            },
            weights={e["name"]: float(e["weight"]) for e in cfg.rewards},
        )
    if cfg.name == "length_penalty":
        return LengthPenaltyReward(
            **scores, rules=rules, min_reasoning_words=cfg.min_reasoning_words, penalty_coef=cfg.penalty_coef
        )
    if cfg.name == "partial_format":
        return PartialFormatReward(**scores, rules=rules, partial_format=cfg.partial_format)
    if cfg.name == "composite":
        return CompositeReward(
            **scores,
            rules=rules,
            min_reasoning_words=cfg.min_reasoning_words,
            leak_window_words=cfg.leak_window_words,
            leak_penalty=cfg.leak_penalty,
            structure_penalty=cfg.structure_penalty,
        )
    return CorrectnessReward(**scores, rules=rules)


def build_logger(cfg: LoggerConfig, tags: dict[str, str], run_id: str | None = None) -> ResumableMLFlowLogger:
    """MLflow logger on ``logger.tracking_uri`` (default: ``sqlite:///$PWD/mlflow.db``, artifacts beside it);
    ``run_id`` continues that run.

    A sweep trial's run is also tagged with the sweep, trial number and overrides, and nested under the sweep's
    parent run (see :mod:`medrlvr.sweeping.tags`).
    """
    uri = cfg.tracking_uri or default_tracking_uri()
    return ResumableMLFlowLogger(
        experiment_name=cfg.experiment_name,
        run_name=cfg.run_name or trial_run_name(cfg) or fresh_run_name(tags.get("algo", "run")),
        tracking_uri=uri,
        tags={**tags, **trial_tags(cfg, hydra_task_overrides())},
        artifact_location=artifact_location(uri),
        run_id=run_id,
    )


def fresh_run_name(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<4 hex digits>``: distinct for every run. MLflow's own random names are
    drawn from Python's generator, which the run's seed has fixed, so every run with one seed got one name."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _cache(cfg: ModelConfig) -> Path | None:
    return Path(cfg.cache_dir) if cfg.cache_dir else None
