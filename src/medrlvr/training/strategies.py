"""Lightning strategies for more than one process: DDP and DeepSpeed ZeRO, built from ``trainer.*``.

:func:`deepspeed_config` is the only place the DeepSpeed config is written: Lightning's
``DeepSpeedStrategy`` receives it whole, and the engine test under ``torchrun`` uses it as is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy

from medrlvr.config import TrainConfig, TrainerConfig


def deepspeed_config(
    trainer: TrainerConfig, max_grad_norm: float, micro_batch_size: int, gradient_accumulation_steps: int = 1
) -> dict[str, Any]:
    """DeepSpeed's JSON config for ``trainer.deepspeed`` (ZeRO stage, offload, buckets) and ``trainer.precision``.

    DeepSpeed clips gradients to ``max_grad_norm`` and skips steps whose gradients are not finite.
    ``micro_batch_size`` sequences per forward/backward pass, ``gradient_accumulation_steps`` passes per
    optimizer step (the PPO module marks the last pass of each step itself). The optimizer is the module's
    own ``torch.optim.AdamW``, hence ``zero_allow_untested_optimizer``.
    """
    ds = trainer.deepspeed
    zero: dict[str, Any] = {
        "stage": ds.stage,
        "contiguous_gradients": True,
        "overlap_comm": ds.overlap_comm,
        "reduce_scatter": True,
        "reduce_bucket_size": ds.bucket_size,
        "allgather_bucket_size": ds.bucket_size,
    }
    if ds.stage == 3:
        zero["stage3_prefetch_bucket_size"] = ds.bucket_size
        # save_pretrained of a ZeRO-3 model needs the full 16-bit weights gathered on rank 0
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": ds.pin_memory}
    if ds.offload_parameters:
        zero["offload_param"] = {"device": "cpu", "pin_memory": ds.pin_memory}
    return {
        # with offload, torch's AdamW steps the fp32 state on the CPU (DeepSpeedCPUAdam would first be compiled)
        "zero_force_ds_cpu_optimizer": False,
        "zero_optimization": zero,
        "bf16": {"enabled": trainer.precision.startswith("bf16")},
        "fp16": {"enabled": trainer.precision.startswith("16")},
        "gradient_clipping": max_grad_norm,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


def micro_batch_size(cfg: TrainConfig) -> int:
    """Sequences per forward/backward pass: the RL micro-batch, or the SFT batch."""
    return getattr(cfg.algo, "micro_batch_size", None) or getattr(cfg.algo, "batch_size", None) or cfg.data.batch_size


def gradient_accumulation_steps(cfg: TrainConfig) -> int:
    """Forward/backward passes per optimizer step (1 for SFT)."""
    return getattr(cfg.algo, "gradient_accumulation_steps", 1)


def full_deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """:func:`deepspeed_config` for a whole run's config."""
    return deepspeed_config(cfg.trainer, cfg.algo.max_grad_norm, micro_batch_size(cfg), gradient_accumulation_steps(cfg))


class AccumulatingDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy keeping the config's ``gradient_accumulation_steps``.

    Lightning overwrites that key with ``Trainer(accumulate_grad_batches)``, which manual optimization
    (the PPO module's) must leave at 1; the module accumulates over micro-batches itself, and DeepSpeed
    must know the count (its ZeRO optimizer keeps separate accumulation buffers when it is above 1).
    """

    def _format_batch_size_and_grad_accum_config(self) -> None:
        steps = self.config.pop("gradient_accumulation_steps", 1)
        super()._format_batch_size_and_grad_accum_config()
        self.config["gradient_accumulation_steps"] = steps


def build_strategy(cfg: TrainConfig) -> str | Strategy:
    """``auto`` stays Lightning's choice (one process); ``ddp`` and ``deepspeed`` become strategy objects."""
    if cfg.trainer.strategy == "ddp":
        return DDPStrategy()
    if cfg.trainer.strategy == "deepspeed":
        return AccumulatingDeepSpeedStrategy(config=full_deepspeed_config(cfg))
    return cfg.trainer.strategy


def zero3(cfg: TrainerConfig) -> bool:
    """Whether parameters are partitioned across processes (built inside ``configure_model``)."""
    return cfg.strategy == "deepspeed" and cfg.deepspeed.stage == 3


@contextlib.contextmanager
def hf_zero3_context(cfg: TrainConfig) -> Iterator[None]:
    """Tell transformers that ZeRO-3 is on while models are built, so that ``from_pretrained`` loads the
    checkpoint into partitioned parameters (it gathers each module's weights as it fills them)."""
    if not zero3(cfg.trainer):
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(full_deepspeed_config(cfg))
    try:
        yield
    finally:
        del keep_alive


def deepspeed_engine(module: L.LightningModule) -> Any | None:
    """The ``DeepSpeedEngine`` wrapping ``module`` during ``fit``, else None."""
    trainer = module._trainer
    if trainer is None or not isinstance(trainer.strategy, DeepSpeedStrategy):
        return None
    return trainer.strategy.model


def begin_micro_batch(engine: Any | None) -> None:
    """Under DeepSpeed, mark the start of a forward/backward pass as ``DeepSpeedEngine.forward`` does.

    The PPO module runs all of an iteration's micro-batches inside one call of the engine's forward; ZeRO-3
    counts micro-steps at this mark and, without it, would overwrite instead of accumulate gradients.
    """
    optimizer = getattr(engine, "optimizer", None)
    if hasattr(optimizer, "clear_backward_seen_flag"):
        optimizer.clear_backward_seen_flag()


def clip_and_step(
    module: L.LightningModule, optimizer: Any, groups: list[list[torch.nn.Parameter]], max_grad_norm: float
) -> tuple[list[float], bool]:
    """Clip the gradients of each of ``groups`` to norm ``max_grad_norm`` on its own and step; returns (each
    group's norm before clipping, whether it stepped). One group clips the norm of all its gradients together.

    A non-finite norm skips the step and clears the gradients. Under DeepSpeed the engine does both itself
    (``gradient_clipping`` in its config; ZeRO partitions the gradients, so they cannot be clipped here): it
    clips the global norm, so only one group is accepted.
    """
    engine = deepspeed_engine(module)
    if engine is not None:
        if len(groups) != 1:
            raise ValueError("DeepSpeed clips one global gradient norm: parameter groups cannot be clipped apart")
        optimizer.step()
        norm = engine.get_global_grad_norm()
        norm = float("nan") if norm is None else float(norm)
        return [norm], math.isfinite(norm)
    norms = [float(torch.nn.utils.clip_grad_norm_(group, max_grad_norm)) for group in groups]
    if not all(math.isfinite(norm) for norm in norms):
        optimizer.zero_grad()
        return norms, False
    optimizer.step()
    return norms, True


@contextlib.contextmanager
def gathered_parameters(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Under ZeRO-3, make ``module``'s full parameters present on every process for the block (collective:
    every process must enter); otherwise do nothing."""
    if not enabled:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield
