"""Learning-rate schedules and the count of optimizer steps they span (OpenRLHF's conventions)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_constant_schedule, get_cosine_with_min_lr_schedule_with_warmup

from medrlvr.config import AlgoConfig
from medrlvr.training.experience import whole_group_rows


def optimizer_steps(algo: AlgoConfig, prompts: int, num_samples: int, iterations: int) -> int:
    """Optimizer steps of a run: ``iterations`` × ``ppo_epochs`` × minibatches of the ``prompts`` ×
    ``num_samples`` completions each process updates on per iteration."""
    minibatches = math.ceil(prompts * num_samples / whole_group_rows(algo.mini_batch_size, num_samples))
    return iterations * algo.ppo_epochs * minibatches


def build_lr_scheduler(optimizer: torch.optim.Optimizer, algo: AlgoConfig, total_steps: int) -> LambdaLR:
    """``algo.lr_scheduler`` over ``total_steps`` optimizer steps, stepped once per optimizer step. Each
    parameter group keeps its own peak and floor (``min_lr_ratio`` × its learning rate)."""
    if algo.lr_scheduler == "constant":
        return get_constant_schedule(optimizer)
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=math.ceil(algo.lr_warmup_ratio * total_steps),
        num_training_steps=total_steps,
        min_lr_rate=algo.min_lr_ratio,
    )


def load_lr_scheduler(scheduler: LambdaLR, state: dict[str, Any]) -> None:
    """Continue ``scheduler`` at the step saved in ``state`` (its ``state_dict``), keeping its own peak learning
    rates and length (a resumed run may change the learning rates and the run's length), and set its optimizer's
    learning rates to the schedule's at that step (LambdaLR's ``base_lr × lambda(step)``)."""
    peaks = scheduler.base_lrs
    scheduler.load_state_dict(state)
    scheduler.base_lrs = peaks
    for group, peak, factor in zip(scheduler.optimizer.param_groups, peaks, scheduler.lr_lambdas):
        group["lr"] = peak * factor(scheduler.last_epoch)


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr/<group name>`` of every named parameter group."""
    return {f"lr/{group['name']}": group["lr"] for group in optimizer.param_groups if "name" in group}
