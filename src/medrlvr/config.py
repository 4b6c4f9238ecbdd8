"""Structured configs: the schema behind every Hydra group.

Hydra merges the YAML files of ``conf/`` onto these dataclasses, so an unknown key or a wrong type
fails at start naming the key. Range checks run in ``__post_init__`` when :func:`to_train_config`
turns the composed config into objects. Each schema's defaults are its group's default choice in
``conf/config.yaml`` (``model/smollm2``, ``data/bundled``, ``algo/ppo``, ``trainer/cpu``, ...), where the
values are explained; ``tests/config/test_defaults.py`` checks that they agree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from medrlvr.algo import registry
from medrlvr.paths import sweeps_dir
from medrlvr.rewards.functions import REWARDS


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _check_registered(name: str, names: registry.Registry) -> None:
    """``name`` is registered in ``names`` (the error names the config key and the choices)."""
    choices = names.names()
    _check(name in choices, names.key, f"unknown {name!r}; choose one of {', '.join(choices)}")


MAX_SEED = 2**32 - 1  # NumPy's limit (Lightning's seed_everything seeds it)


def _check_seed(seed: int, key: str = "seed") -> None:
    _check(0 <= seed <= MAX_SEED, key, f"must be between 0 and {MAX_SEED}, got {seed}")


@dataclass
class ModelConfig:
    name_or_path: str = "bundled:smollm2-135m-instruct"
    dtype: str = "float32"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_top_layers: int = 8
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    critic: str = "shared"
    gradient_checkpointing: bool = False
    logits_chunk_size: int = 1024
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.logits_chunk_size >= 1, "model.logits_chunk_size", f"must be >= 1, got {self.logits_chunk_size}")
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", f"unknown dtype {self.dtype!r}")
        _check(self.lora_rank >= 0, "model.lora_rank", f"must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        _check(self.lora_top_layers >= 0, "model.lora_top_layers", "must be >= 0 (0 = every layer)")
        _check(self.lora_alpha > 0, "model.lora_alpha", f"must be > 0, got {self.lora_alpha}")
        _check(0 <= self.lora_dropout < 1, "model.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _check(
            self.critic in ("separate", "shared", "none"),
            "model.critic",
            f"must be 'separate', 'shared' or 'none', got {self.critic!r}",
        )


@dataclass
class PromptConfig:
    """How a question becomes the model's input. ``template``: ``chat`` (the tokenizer's chat template, or
    ``Role: text`` turns when it has none) or ``r1_zero`` (DeepSeek-R1-Zero's plain
    ``<system prompt> User: <question> Assistant:`` text, for base models). ``response_prefix`` is appended
    after the assistant header and counts as the start of the response (``"<think>"`` pre-fills the think
    block; ``""`` leaves the whole format to the model). ``style``: ``cot`` (reason, then answer) or ``direct``
    (an evaluation prompt: the think block is pre-filled and closed, so the model answers at once;
    ``response_prefix`` is then unused; see :class:`medrlvr.data.prompts.PromptBuilder`)."""

    system_prompt: str = "r1"
    one_shot: bool = True
    reminder: bool = True
    response_prefix: str = "<think>"
    template: str = "chat"
    style: str = "cot"

    def __post_init__(self) -> None:
        _check(
            self.template in ("chat", "r1_zero"),
            "data.prompt.template",
            f"must be chat or r1_zero, got {self.template!r}",
        )
        _check(self.style in ("cot", "direct"), "data.prompt.style", f"must be cot or direct, got {self.style!r}")


@dataclass
class DataConfig:
    """A dataset and its splits. ``ood_split`` names a split that is out of distribution for a model trained
    on ``train_split`` (bundled: ``ood``): ``medrlvr.evaluate`` adds it by default and ``trainer.eval_ood``
    evaluates it during training (``eval/<name>_<ood_split>/*``, as ``eval_split``'s ``eval/<name>_<eval_split>/*``).
    ``eval_sets``: more datasets training evaluates (``eval/<key>/*``) on their ``test_split``, each cut to ``eval_size``: a
    list of ``conf/data`` names or a name → data overrides mapping (:mod:`medrlvr.data.compose`). A question
    whose prompt plus ``rollout.max_new_tokens`` (evaluation: ``rollout.eval_max_new_tokens``) exceeds the
    model's context is refused, or left out (with a warning) when ``skip_long_prompts``.
    ``shuffle_options_each_epoch``: each time a training question is drawn its options are re-shuffled (seeded
    by ``seed``, the question and the draw) and its answer letter follows, against a position bias; evaluation
    questions keep their published order."""

    name: str = "bundled"
    train_split: str = "train"
    eval_split: str = "validation"
    test_split: str = "test"
    ood_split: Optional[str] = "ood"
    batch_size: int = 8
    option_count: Optional[int] = None
    shuffle_options_each_epoch: bool = False
    eval_size: int = 64
    path: Optional[str] = None
    hub_name: Optional[str] = None
    variant: Optional[str] = None
    skip_invalid_rows: bool = False
    skip_long_prompts: bool = False
    answer_index_base: Optional[int] = None
    prompt: PromptConfig = field(default_factory=PromptConfig)
    eval_sets: Any = None

    def __post_init__(self) -> None:
        _check(
            self.answer_index_base in (None, 0, 1),
            "data.answer_index_base",
            f"must be 0, 1 or null (decided from the file), got {self.answer_index_base}",
        )
        _check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(
            self.option_count is None or 2 <= self.option_count <= 10,
            "data.option_count",
            f"must be between 2 and 10 (letters A-J), got {self.option_count}",
        )
        _check(self.eval_size >= 0, "data.eval_size", f"must be >= 0, got {self.eval_size}")

    def test_split_reason(self, split: str) -> Optional[str]:
        """Why ``split`` is a test split (it is ``test_split`` or ``ood_split``, or is named test); None when it
        is not, e.g. a validation split."""
        if split == self.test_split:
            return f"it is data.test_split ({self.test_split!r})"
        if split == self.ood_split:
            return f"it is data.ood_split ({self.ood_split!r})"
        if split.casefold() == "test":
            return "it is named test"
        return None


@dataclass
class RewardConfig:
    """The reward's scores and how it reads completions (the evaluation reads them the same way).

    ``format``: ``strict`` (nothing but whitespace outside ``<think>…</think><answer>…</answer>``) or ``study``
    (text before ``<think>`` allowed and reported). ``match_option_text``: an answer that is exactly one
    option's text chooses that option (off: a format failure, ``option_text``). See
    :mod:`medrlvr.rewards.parsing`.

    ``name=weighted`` sums ``rewards``, a list of ``{name, weight, <that reward's parameters>}`` (unset parameters
    take the reward's own defaults; ``format`` and ``match_option_text`` apply to all); the first is
    authoritative for the parse (:class:`~medrlvr.rewards.weighted.WeightedRewards`).
    """

    name: str = "default"
    format_error: float = -1.0
    wrong_answer: float = 0.0
    correct_answer: float = 1.0
    min_reasoning_words: int = 0
    penalty_coef: float = 0.0
    partial_format: float = -0.5
    leak_window_words: int = 10
    leak_penalty: float = 0.0
    structure_penalty: float = 0.0
    format: str = "strict"
    match_option_text: bool = False
    rewards: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(
            self.name in (*REWARDS, "weighted"),
            "reward.name",
            f"unknown reward {self.name!r}; choose one of {', '.join((*REWARDS, 'weighted'))}",
        )
        _check(
            (self.name == "weighted") == bool(self.rewards),
            "reward.rewards",
            "reward=weighted needs a non-empty list of {name, weight, ...}" if self.name == "weighted"
            else f"only used by reward=weighted, not reward={self.name}",
        )
        unused = self.unused_parameters()
        _check(
            not unused,
            f"reward.{unused[0] if unused else ''}",
            f"not a parameter of reward={self.name}"
            + ("; set it in an entry of reward.rewards" if self.name == "weighted" else "; choose the reward that has it"),
        )
        names = [_check_weighted_entry(f"reward.rewards[{i}]", entry) for i, entry in enumerate(self.rewards)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        _check(not duplicates, "reward.rewards", f"each reward may appear once, repeated: {', '.join(duplicates)}")
        _check(self.format in ("strict", "study"), "reward.format", f"must be strict or study, got {self.format!r}")
        _check(
            self.name != "partial_format" or self.format_error <= self.partial_format <= self.wrong_answer,
            "reward.partial_format",
            f"must lie between format_error ({self.format_error}) and wrong_answer ({self.wrong_answer}), "
            f"got {self.partial_format}",
        )
        _check(self.min_reasoning_words >= 0, "reward.min_reasoning_words", "must be >= 0")
        _check(self.penalty_coef >= 0, "reward.penalty_coef", "must be >= 0")
        _check(self.leak_window_words >= 1, "reward.leak_window_words", "must be >= 1")
        _check(self.leak_penalty >= 0, "reward.leak_penalty", "must be >= 0")
        _check(self.structure_penalty >= 0, "reward.structure_penalty", "must be >= 0")

    def unused_parameters(self) -> list[str]:
        """Parameters set away from their default that ``name``'s reward does not read (a user's value would
        otherwise be ignored): another reward's parameters, or under ``weighted`` any outside ``rewards``."""
        used = {"rewards"} if self.name == "weighted" else {f.name for f in fields(REWARDS[self.name])}
        shared = {"name", "format", "match_option_text", "rewards"}
        return [
            f.name for f in fields(self)
            if f.name not in used | shared and getattr(self, f.name) != f.default
        ]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_weighted_entry(key: str, entry: Any) -> str:
    """One ``reward.rewards`` entry is ``{name, weight, <parameters of that reward>}`` with numbers; its name."""
    _check(isinstance(entry, dict), key, f"must be a mapping {{name, weight, ...}}, got {entry!r}")
    name = entry.get("name")
    _check(name in REWARDS, f"{key}.name", f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}")
    _check(_is_number(entry.get("weight")), f"{key}.weight", f"must be a number, got {entry.get('weight')!r}")
    parameters = {f.name for f in fields(REWARDS[name]) if f.name != "rules"}
    for param, value in entry.items():
        if param not in ("name", "weight"):
            _check(param in parameters, f"{key}.{param}", f"not a parameter of {name}: {', '.join(sorted(parameters))}")
            _check(_is_number(value), f"{key}.{param}", f"must be a number, got {value!r}")
    try:  # the single reward's range checks, reported under this entry's key
        RewardConfig(**{k: v for k, v in entry.items() if k != "weight"})
    except ConfigError as error:
        raise ConfigError(str(error).replace("reward.", f"{key}.", 1)) from None
    return name


LR_SCHEDULERS = ("constant", "cosine_with_min_lr")


@dataclass
class AlgoConfig:
    """Policy-gradient settings; ``advantage_estimator`` decides the algorithm's maths, ``name`` labels the run
    and must be the algorithm of that estimator (:func:`medrlvr.algo.registry.algorithms`: ``ppo`` = ``gae``,
    the only estimator with a critic; ``grpo`` = ``grpo``; ``dr_grpo`` = ``grpo_no_std``; ``rloo``;
    ``reinforce_pp``).

    ``kl_coef`` is the KL penalty folded into the per-token reward (used only when ``kl_in_reward``);
    ``kl_loss_coef`` adds ``kl_estimator``'s KL to the loss.
    ``clip_range_low``/``clip_range_high`` default to ``clip_range``; ``dual_clip`` null is off.
    ``tis_cap`` C weights each token's policy loss by ``min(π_old/π_rollout, C)`` (truncated importance
    sampling against rollout/trainer mismatch); null is off.
    ``reuse_rollout_logprobs`` takes the rollout engine's log-probs of the sampled tokens as the old log-probs
    instead of recomputing them (the ``hf`` engine in 32-bit computes them with the trainer's weights,
    precision and temperature); the trainer still recomputes them on iteration 1 and every
    ``logprob_check_every``-th, where ``rollout/logprob_abs_diff`` is logged. With a critic the values pass runs
    without the output layer. null (the default) reuses them wherever they are the trainer's
    (:func:`rollout_logprobs_match`) and ``tis_cap`` is off; true stops where they are not.

    Batch sizes count completions per process: ``mini_batch_size`` per optimizer step, ``micro_batch_size``
    per forward/backward pass (gradients accumulated over ``mini_batch_size / micro_batch_size`` passes;
    null = ``mini_batch_size``), ``forward_batch_size`` per pass of the no-grad log-prob and value passes
    (null = ``micro_batch_size``).

    ``adam_betas`` are AdamW's (β1, β2) for actor and critic. ``lr_scheduler`` ``constant`` keeps
    ``actor_lr``/``critic_lr``; ``cosine_with_min_lr`` warms up linearly over the first ``lr_warmup_ratio`` of
    the run's optimizer steps, then decays each learning rate along a cosine to ``min_lr_ratio`` times itself.
    ``separate_clipping`` clips the actor's and the critic's gradients each to norm ``max_grad_norm`` (as
    separate actor and critic models are), instead of their joint norm; not under DeepSpeed, whose engine
    clips one global norm.
    """

    name: str = "ppo"
    advantage_estimator: str = "gae"
    kl_in_reward: bool = True
    kl_coef: float = 0.01
    kl_loss_coef: float = 0.0
    kl_estimator: str = "k1"
    clip_range: float = 0.2
    clip_range_low: Optional[float] = None
    clip_range_high: Optional[float] = None
    dual_clip: Optional[float] = None
    value_clip_range: Optional[float] = 0.5
    gamma: float = 1.0
    lam: float = 1.0
    group_eps: float = 1e-9
    filter_equal_reward_groups: bool = False
    ppo_epochs: int = 2
    mini_batch_size: int = 16
    micro_batch_size: Optional[int] = None
    forward_batch_size: Optional[int] = None
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scheduler: str = "constant"
    lr_warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1
    value_loss_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    separate_clipping: bool = False
    whiten_advantages: bool = True
    loss_aggregation: str = "token-mean"
    tis_cap: Optional[float] = None
    reuse_rollout_logprobs: Optional[bool] = None
    logprob_check_every: int = 10

    @property
    def uses_critic(self) -> bool:
        return registry.ADVANTAGE_ESTIMATORS.get(self.advantage_estimator).critic

    @property
    def gradient_accumulation_steps(self) -> int:
        """Forward/backward passes per optimizer step."""
        return self.mini_batch_size // self.micro_batch_size

    @property
    def uses_groups(self) -> bool:
        """Whether the update needs several completions per prompt."""
        return registry.ADVANTAGE_ESTIMATORS.get(self.advantage_estimator).groups or self.filter_equal_reward_groups

    def __post_init__(self) -> None:
        algorithms = registry.algorithms()
        _check(self.name in algorithms, "algo.name", f"unknown algorithm {self.name!r}; choose one of {', '.join(algorithms)}")
        _check_registered(self.advantage_estimator, registry.ADVANTAGE_ESTIMATORS)
        labelled = {estimator: name for name, estimator in algorithms.items()}[self.advantage_estimator]
        _check(
            algorithms[self.name] == self.advantage_estimator,
            "algo.name",
            f"is {self.name!r}, which uses algo.advantage_estimator={algorithms[self.name]}, but the estimator is "
            f"{self.advantage_estimator!r} ({labelled}): choose algo={labelled} (or set algo.name={labelled}), "
            "so that the run is labelled by the algorithm it trains",
        )
        _check(self.kl_coef >= 0, "algo.kl_coef", f"must be >= 0, got {self.kl_coef}")
        _check(
            self.kl_in_reward or self.kl_coef == 0,
            "algo.kl_coef",
            f"is {self.kl_coef} but algo.kl_in_reward is false; set it to 0 or use algo.kl_loss_coef for a KL loss term",
        )
        _check(self.kl_loss_coef >= 0, "algo.kl_loss_coef", f"must be >= 0, got {self.kl_loss_coef}")
        _check_registered(self.kl_estimator, registry.KL_ESTIMATORS)
        _check(0 < self.clip_range < 1, "algo.clip_range", f"must be in (0, 1), got {self.clip_range}")
        if self.clip_range_low is None:
            self.clip_range_low = self.clip_range
        if self.clip_range_high is None:
            self.clip_range_high = self.clip_range
        _check(0 < self.clip_range_low < 1, "algo.clip_range_low", f"must be in (0, 1), got {self.clip_range_low}")
        _check(self.clip_range_high > 0, "algo.clip_range_high", f"must be > 0, got {self.clip_range_high}")
        _check(self.dual_clip is None or self.dual_clip > 1, "algo.dual_clip", f"must be > 1 or null (off), got {self.dual_clip}")
        _check(self.value_clip_range is None or self.value_clip_range > 0, "algo.value_clip_range", "must be > 0 or null")
        _check(0 <= self.gamma <= 1, "algo.gamma", f"must be in [0, 1], got {self.gamma}")
        _check(0 <= self.lam <= 1, "algo.lam", f"must be in [0, 1], got {self.lam}")
        _check(self.group_eps > 0, "algo.group_eps", f"must be > 0, got {self.group_eps}")
        _check(self.ppo_epochs >= 1, "algo.ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
        _check(self.mini_batch_size >= 1, "algo.mini_batch_size", f"must be >= 1, got {self.mini_batch_size}")
        if self.micro_batch_size is None:
            self.micro_batch_size = self.mini_batch_size
        _check(
            1 <= self.micro_batch_size <= self.mini_batch_size and self.mini_batch_size % self.micro_batch_size == 0,
            "algo.micro_batch_size",
            f"must divide algo.mini_batch_size ({self.mini_batch_size}), got {self.micro_batch_size}",
        )
        if self.forward_batch_size is None:
            self.forward_batch_size = self.micro_batch_size
        _check(self.forward_batch_size >= 1, "algo.forward_batch_size", f"must be >= 1, got {self.forward_batch_size}")
        _check(self.actor_lr > 0 and self.critic_lr > 0, "algo.actor_lr/critic_lr", "learning rates must be > 0")
        _check(
            len(self.adam_betas) == 2 and all(0 <= beta < 1 for beta in self.adam_betas),
            "algo.adam_betas",
            f"must be two numbers in [0, 1), got {list(self.adam_betas)}",
        )
        _check(
            self.lr_scheduler in LR_SCHEDULERS,
            "algo.lr_scheduler",
            f"unknown schedule {self.lr_scheduler!r}; choose one of {', '.join(LR_SCHEDULERS)}",
        )
        _check(0 <= self.lr_warmup_ratio < 1, "algo.lr_warmup_ratio", f"must be in [0, 1), got {self.lr_warmup_ratio}")
        _check(0 <= self.min_lr_ratio <= 1, "algo.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0")
        _check_registered(self.loss_aggregation, registry.LOSS_AGGREGATIONS)
        _check(self.tis_cap is None or self.tis_cap > 0, "algo.tis_cap", f"must be > 0 or null (off), got {self.tis_cap}")
        _check(
            self.logprob_check_every >= 1, "algo.logprob_check_every", f"must be >= 1, got {self.logprob_check_every}"
        )
        _check(
            not (self.reuse_rollout_logprobs and self.tis_cap is not None),
            "algo.reuse_rollout_logprobs",
            "cannot be combined with algo.tis_cap: importance weights against the rollout's log-probs need the "
            "trainer's own",
        )


@dataclass
class SFTConfig:
    """Supervised fine-tuning baseline: cross-entropy on the response tokens of a target
    ``<think>rationale</think><answer>X</answer>`` (``rationale``: ``template`` names the correct option;
    ``field`` uses the example's ``rationale_field`` metadata when non-empty, else the template).
    ``batch_size`` null = ``data.batch_size``; ``epochs`` null = ``trainer.max_steps`` steps, else that many
    passes over the training split."""

    name: str = "sft"
    lr: float = 3e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: Optional[int] = None
    epochs: Optional[int] = None
    rationale: str = "template"
    rationale_field: str = "exp"

    def __post_init__(self) -> None:
        _check(self.name == "sft", "algo.name", f"the SFT schema needs name 'sft', got {self.name!r}")
        _check(self.lr > 0, "algo.lr", f"must be > 0, got {self.lr}")
        _check(self.max_grad_norm > 0, "algo.max_grad_norm", "must be > 0")
        _check(self.batch_size is None or self.batch_size >= 1, "algo.batch_size", "must be >= 1 or null")
        _check(self.epochs is None or self.epochs >= 1, "algo.epochs", "must be >= 1 or null")
        _check(self.rationale in ("template", "field"), "algo.rationale", f"must be 'template' or 'field', got {self.rationale!r}")


@dataclass
class VLLMConfig:
    """Settings of the ``vllm`` rollout backend (ignored by ``hf``).

    ``dtype`` null = ``model.dtype`` (rollout and trainer then share the precision). ``max_model_len``
    null = the model's context length. ``sleep_between_steps`` frees the engine's GPU memory (KV cache;
    weights offloaded to host memory) while the trainer runs, where vLLM supports it (not on CPUs).
    ``cpu_kvcache_gib`` sizes the KV cache on a CPU (``VLLM_CPU_KVCACHE_SPACE``; ignored on GPUs).
    """

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    enforce_eager: bool = True
    dtype: Optional[str] = None
    max_model_len: Optional[int] = None
    enable_prefix_caching: bool = True
    sleep_between_steps: bool = True
    cpu_kvcache_gib: int = 1

    def __post_init__(self) -> None:
        _check(self.tensor_parallel_size >= 1, "rollout.vllm.tensor_parallel_size", "must be >= 1")
        _check(
            0 < self.gpu_memory_utilization <= 1,
            "rollout.vllm.gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _check(
            self.dtype in (None, "float32", "bfloat16", "float16"),
            "rollout.vllm.dtype",
            f"must be float32, bfloat16, float16 or null (= model.dtype), got {self.dtype!r}",
        )
        _check(self.max_model_len is None or self.max_model_len >= 1, "rollout.vllm.max_model_len", "must be >= 1 or null")
        _check(self.cpu_kvcache_gib >= 1, "rollout.vllm.cpu_kvcache_gib", f"must be >= 1, got {self.cpu_kvcache_gib}")


ROLLOUT_BACKENDS = ("hf", "vllm")


@dataclass
class RolloutConfig:
    """Sampling settings shared by the backends; ``generation_batch_size`` is the ``hf`` backend's chunk size
    and ``vllm`` holds the ``vllm`` backend's engine settings."""

    backend: str = "hf"
    num_samples: int = 4
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] = field(default_factory=lambda: ["</answer>"])
    generation_batch_size: int = 64
    eval_max_new_tokens: int = 96
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def __post_init__(self) -> None:
        _check(
            self.backend in ROLLOUT_BACKENDS,
            "rollout.backend",
            f"unknown backend {self.backend!r}; choose one of {', '.join(ROLLOUT_BACKENDS)}",
        )
        _check(self.num_samples >= 1, "rollout.num_samples", f"must be >= 1, got {self.num_samples}")
        _check(self.max_new_tokens >= 1, "rollout.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(
            self.eval_max_new_tokens >= 1,
            "rollout.eval_max_new_tokens",
            f"must be >= 1, got {self.eval_max_new_tokens}",
        )
        _check(
            0 < self.temperature < math.inf,
            "rollout.temperature",
            f"must be > 0 and finite for training rollouts, got {self.temperature}",
        )
        _check(0 < self.top_p <= 1, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, "rollout.top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _check(
            self.generation_batch_size >= 1,
            "rollout.generation_batch_size",
            f"must be >= 1, got {self.generation_batch_size}",
        )
        _check(all(self.stop_strings), "rollout.stop_strings", f"must not hold an empty string: {self.stop_strings}")


STRATEGIES = ("auto", "ddp", "deepspeed")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
# Lightning's precision names (and their short aliases)
PRECISIONS = (
    "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "transformer-engine",
    "transformer-engine-float16", "32", "bf16", "16", "64",
)


@dataclass
class DeepSpeedConfig:
    """ZeRO settings used when ``trainer.strategy=deepspeed`` (see :mod:`medrlvr.training.strategies`).

    ``stage`` 2 shards optimizer state and gradients, 3 also the parameters (built partitioned);
    ``offload_optimizer`` keeps optimizer state in CPU memory; ``offload_parameters`` (stage 3) also the
    parameters; ``bucket_size`` is the element count of ZeRO's reduce / all-gather buckets.
    """

    stage: int = 2
    offload_optimizer: bool = False
    offload_parameters: bool = False
    pin_memory: bool = True
    bucket_size: int = 200_000_000
    overlap_comm: bool = True

    def __post_init__(self) -> None:
        _check(self.stage in (1, 2, 3), "trainer.deepspeed.stage", f"must be 1, 2 or 3, got {self.stage}")
        _check(
            not self.offload_parameters or self.stage == 3,
            "trainer.deepspeed.offload_parameters",
            f"needs stage 3 (parameters are only partitioned there), got stage {self.stage}",
        )
        _check(self.bucket_size >= 1, "trainer.deepspeed.bucket_size", f"must be >= 1, got {self.bucket_size}")


# trainer.log_model: no MLflow model, the whole policy, or its LoRA adapters only (see medrlvr.training.model_logging)
LOG_MODEL_CHOICES = ("false", "true", "adapters")


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` settings. ``devices`` per node (-1 = every GPU) and ``num_nodes``; ``strategy``
    ``auto`` (one process), ``ddp`` or ``deepspeed`` (with ``deepspeed.*``). Each process generates rollouts
    from its own ``data.batch_size`` prompts per iteration. ``max_epochs`` (null = off), when set, replaces
    ``max_steps`` (for SFT, unless ``algo.epochs`` is set): the run takes as many iterations as pass over the training questions that many
    times at the global batch (``data.batch_size`` × processes), so it means the same on any number of GPUs.
    The held-out sets are evaluated at step 0 (``eval_before``), at the last step (``eval_after``) and, when
    ``eval_every`` is set, after every that many iterations. ``log_system_metrics``: MLflow's system metrics
    (``system/*``: CPU, memory, disk, network, GPU) sampled into the run."""

    max_steps: int = 12
    max_epochs: Optional[float] = None
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    num_threads: int = 0
    log_samples_every: int = 5
    eval_before: bool = True
    eval_after: bool = True
    eval_ood: bool = False
    eval_every: Optional[int] = None
    log_system_metrics: bool = False
    save_model: bool = True
    log_model: str = "adapters"
    output_dir: Optional[str] = None
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    max_bad_updates: int = 3

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, "trainer.max_steps", f"must be >= 1, got {self.max_steps}")
        _check(
            self.max_epochs is None or self.max_epochs > 0,
            "trainer.max_epochs",
            f"must be > 0 or null (off), got {self.max_epochs}",
        )
        _check(self.devices >= 1 or self.devices == -1, "trainer.devices", f"must be >= 1 or -1 (all), got {self.devices}")
        _check(self.num_nodes >= 1, "trainer.num_nodes", f"must be >= 1, got {self.num_nodes}")
        _check(
            self.accelerator in ACCELERATORS,
            "trainer.accelerator",
            f"unknown accelerator {self.accelerator!r}; choose one of {', '.join(ACCELERATORS)}",
        )
        _check(
            self.precision in PRECISIONS,
            "trainer.precision",
            f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS[:8])}",
        )
        _check(
            self.strategy in STRATEGIES,
            "trainer.strategy",
            f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}",
        )
        _check(self.num_threads >= 0, "trainer.num_threads", "must be >= 0 (0 = all cores)")
        _check(self.log_samples_every >= 0, "trainer.log_samples_every", "must be >= 0 (0 = never)")
        _check(
            self.eval_every is None or self.eval_every >= 1,
            "trainer.eval_every",
            f"must be >= 1 or null (only before and after training), got {self.eval_every}",
        )
        _check(self.checkpoint_every >= 0, "trainer.checkpoint_every", "must be >= 0 (0 = only at the end)")
        _check(self.keep_checkpoints >= 1, "trainer.keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        _check(self.max_bad_updates >= 1, "trainer.max_bad_updates", f"must be >= 1, got {self.max_bad_updates}")
        self.log_model = str(self.log_model).lower()  # Hydra reads true/false as booleans: "True" here
        _check(
            self.log_model in LOG_MODEL_CHOICES,
            "trainer.log_model",
            f"must be one of {', '.join(LOG_MODEL_CHOICES)}, got {self.log_model!r}",
        )


@dataclass
class LoggerConfig:
    tracking_uri: Optional[str] = None
    experiment_name: str = "medrlvr"
    run_name: Optional[str] = None
    samples_per_table: int = 16
    sweep: Optional[str] = None
    trial: Optional[int] = None
    parent_run_id: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.samples_per_table >= 1, "logger.samples_per_table", f"must be >= 1, got {self.samples_per_table}")


@dataclass
class AnalysisConfig:
    """Thresholds of the reasoning-stage classifier (:mod:`medrlvr.analysis`); lengths count words.

    "The run's reference length" is the median reasoning length of the completions of the last
    ``reference_iterations`` iterations (the current one included).
    """

    short_reasoning_words: int = 8
    hacker_length_ratio: float = 0.5
    leak_window_words: int = 8
    leak_position_fraction: float = 0.3
    verbose_reasoning_words: int = 60
    verbose_length_ratio: float = 1.5
    reference_iterations: int = 5
    outside_reasoning_words: int = 5
    example_copy_words: int = 10
    exploit_phase_fraction: float = 0.25
    boundary_min_iterations: int = 3
    seen_fraction: float = 0.1
    examples_per_stage: int = 3

    def __post_init__(self) -> None:
        _check(self.short_reasoning_words >= 1, "analysis.short_reasoning_words", "must be >= 1")
        _check(0 < self.hacker_length_ratio < 1, "analysis.hacker_length_ratio", "must be in (0, 1)")
        _check(
            self.verbose_reasoning_words > self.short_reasoning_words,
            "analysis.verbose_reasoning_words",
            f"must exceed analysis.short_reasoning_words ({self.short_reasoning_words}), got {self.verbose_reasoning_words}",
        )
        _check(self.verbose_length_ratio >= 1, "analysis.verbose_length_ratio", "must be >= 1")
        _check(self.leak_window_words >= 1, "analysis.leak_window_words", "must be >= 1")
        _check(0 < self.leak_position_fraction <= 1, "analysis.leak_position_fraction", "must be in (0, 1]")
        _check(self.reference_iterations >= 1, "analysis.reference_iterations", "must be >= 1")
        _check(self.outside_reasoning_words >= 1, "analysis.outside_reasoning_words", "must be >= 1")
        _check(self.example_copy_words >= 2, "analysis.example_copy_words", "must be >= 2")
        _check(0 < self.exploit_phase_fraction <= 1, "analysis.exploit_phase_fraction", "must be in (0, 1]")
        _check(self.boundary_min_iterations >= 1, "analysis.boundary_min_iterations", "must be >= 1")
        _check(0 < self.seen_fraction <= 1, "analysis.seen_fraction", "must be in (0, 1]")
        _check(self.examples_per_stage >= 0, "analysis.examples_per_stage", "must be >= 0")


def check_sweep_eval_split(data: DataConfig, sweeping: bool) -> None:
    """A sweep's objective is computed on ``data.eval_split``: in a sweep it must not be a test split."""
    reason = data.test_split_reason(data.eval_split) if sweeping else None
    _check(
        reason is None,
        "data.eval_split",
        f"{data.eval_split!r} is a test split ({reason}); a sweep's objective is computed on data.eval_split and "
        "must not tune on test: set data.eval_split to a validation split (e.g. validation for data=bundled, dev "
        "for data=medqa) and report the best trial's test numbers with python -m medrlvr.report",
    )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: Any = MISSING  # AlgoConfig (PPO) or SFTConfig: each conf/algo file names its schema
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 42
    tags: list[str] = field(default_factory=list)
    resume: Optional[str] = None

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        _check(
            self.data.prompt.style == "cot",
            "data.prompt.style",
            "direct is an evaluation prompt (python -m medrlvr.evaluate data.prompt.style=direct); training uses cot",
        )
        _check(
            isinstance(self.algo, AlgoConfig) or self.trainer.strategy != "deepspeed" or self.trainer.deepspeed.stage < 3,
            "trainer.deepspeed.stage",
            "ZeRO-3 is wired for the RL algorithms only; use stage 2 with algo=sft",
        )
        _check(
            not self.trainer.eval_ood or self.data.ood_split is not None,
            "trainer.eval_ood",
            f"data={self.data.name} has no ood_split to evaluate (set data.ood_split or trainer.eval_ood=false)",
        )
        check_sweep_eval_split(self.data, sweeping=self.logger.trial is not None)
        if not isinstance(self.algo, AlgoConfig):
            return
        if self.algo.reuse_rollout_logprobs is None:
            self.algo.reuse_rollout_logprobs = rollout_logprobs_match(self) is None and self.algo.tis_cap is None
        _check(
            not self.algo.filter_equal_reward_groups or self.trainer.strategy == "auto",
            "algo.filter_equal_reward_groups",
            f"needs trainer.strategy=auto: with {self.trainer.strategy!r} every process must take the same number "
            "of optimizer steps, which filtering breaks",
        )
        _check(
            not self.algo.separate_clipping or self.trainer.strategy != "deepspeed",
            "algo.separate_clipping",
            "is not available with trainer.strategy=deepspeed: its engine clips one global gradient norm over actor "
            "and critic; set algo.separate_clipping=false or use trainer.strategy auto or ddp",
        )
        samples = self.data.batch_size * self.rollout.num_samples
        _check(
            self.algo.mini_batch_size <= samples,
            "algo.mini_batch_size",
            f"{self.algo.mini_batch_size} exceeds the completions per iteration "
            f"(data.batch_size × rollout.num_samples = {samples})",
        )
        _check(
            self.rollout.num_samples >= 2 or not self.algo.uses_groups,
            "rollout.num_samples",
            f"must be >= 2 for advantage_estimator={self.algo.advantage_estimator} "
            f"(filter_equal_reward_groups={self.algo.filter_equal_reward_groups}), got {self.rollout.num_samples}",
        )
        _check(
            not self.algo.reuse_rollout_logprobs or rollout_logprobs_match(self) is None,
            "algo.reuse_rollout_logprobs",
            f"needs rollout log-probs computed as the trainer computes them: {rollout_logprobs_match(self)}",
        )
        _check(
            self.model.critic != "none" or not self.algo.uses_critic,
            "model.critic",
            f"is 'none' but algo.advantage_estimator={self.algo.advantage_estimator} needs a critic",
        )


def rollout_logprobs_match(cfg: TrainConfig) -> str | None:
    """Why the rollout engine's log-probs may differ from the trainer's (None: same weights, precision and
    temperature, so they can stand in for the old log-probs)."""
    if cfg.rollout.backend != "hf":
        return f"rollout.backend={cfg.rollout.backend} samples with its own copy of the weights; use rollout=hf"
    if cfg.trainer.precision not in ("32-true", "32") or cfg.model.dtype != "float32":
        return f"trainer.precision={cfg.trainer.precision} with model.dtype={cfg.model.dtype}; use 32-true and float32"
    if cfg.trainer.strategy == "deepspeed":
        return "trainer.strategy=deepspeed runs the trainer's passes through its own engine; use auto or ddp"
    return None


@dataclass
class EvaluateConfig:
    """``python -m medrlvr.evaluate``: a model (``checkpoint`` = a saved policy folder, else the base
    ``model.name_or_path``) on one or several datasets' ``test_split``.

    ``datasets``: null = the ``data`` group's choice; a list of ``conf/data`` names
    (``[medqa,mmlu_pro_health]``); or a mapping from those names to data overrides
    (``{mmlu_pro_health: {path: FILE}}``). ``num_samples`` > 1 samples at ``temperature`` (> 0) and adds
    majority-vote accuracy. ``parent_run_id`` nests the MLflow run under a training run. ``reward``: read
    completions as training did (``reward.format``, ``reward.match_option_text``).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: Optional[str] = None
    datasets: Any = None
    limit: Optional[int] = None
    num_samples: int = 1
    temperature: float = 0.0
    seed: int = 42
    num_threads: int = 0
    output_dir: Optional[str] = None
    parent_run_id: Optional[str] = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1 or null (all questions), got {self.limit}")
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        _check(
            0 <= self.temperature < math.inf,
            "temperature",
            f"must be >= 0 (0 = greedy) and finite, got {self.temperature}",
        )
        _check_seed(self.seed)
        _check(
            self.num_samples == 1 or self.temperature > 0,
            "temperature",
            f"num_samples={self.num_samples} needs sampling: set temperature > 0 (e.g. temperature=0.7)",
        )
        _check(self.num_threads >= 0, "num_threads", "must be >= 0 (0 = all cores)")


@dataclass
class CompareConfig:
    """``python -m medrlvr.compare``: base vs SFT vs RLVR, in and out of distribution, from MLflow runs.

    ``experiments`` (null = ``[medrlvr]`` unless ``run_ids`` are given) and ``run_ids`` select the runs
    (evaluation runs nested under a selected run come with it). ``in_distribution``: dataset names
    (``bundled``: every split) or ``name/split`` labels; null = inferred from the training runs' data.
    ``group_by``: training params (``algo/kl_coef``) that split a method into several rows. ``confidence``:
    level of the t-interval over seeds.
    """

    experiments: Optional[list[str]] = None
    run_ids: list[str] = field(default_factory=list)
    tracking_uri: Optional[str] = None
    in_distribution: Optional[list[str]] = None
    group_by: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "format_rate"])
    confidence: float = 0.95
    output_dir: Optional[str] = None

    def __post_init__(self) -> None:
        _check(0 < self.confidence < 1, "confidence", f"must be in (0, 1), got {self.confidence}")
        _check(bool(self.metrics), "metrics", "name at least one evaluation metric (e.g. [accuracy])")
        if self.experiments is None:
            self.experiments = [] if self.run_ids else [LoggerConfig.experiment_name]


def register_configs() -> None:
    """Register the schemas: ``train_schema``, ``evaluate_schema`` and ``compare_schema`` (top of
    ``conf/config.yaml``, ``conf/evaluate.yaml`` and ``conf/compare.yaml``), and ``algo/ppo_schema`` / ``algo/sft_schema`` (top of each ``conf/algo`` file)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="compare_schema", node=CompareConfig)
    store.store(group="algo", name="ppo_schema", node=AlgoConfig)
    store.store(group="algo", name="sft_schema", node=SFTConfig)
    if not OmegaConf.has_resolver("medrlvr.sweeps_dir"):
        OmegaConf.register_new_resolver("medrlvr.sweeps_dir", lambda: str(sweeps_dir()))
    if not OmegaConf.has_resolver("medrlvr.pid"):  # makes Hydra's run folders unique (see conf/config.yaml)
        OmegaConf.register_new_resolver("medrlvr.pid", os.getpid)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Validate a composed config (range checks included) and return it as dataclasses."""
    obj: Any = OmegaConf.to_object(cfg)
    return obj
