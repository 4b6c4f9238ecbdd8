"""What the PPO and SFT LightningModules share: manual optimisation of a policy that a rollout engine generates
from, guarded against non-finite losses and gradients, with a learning-rate schedule saved in checkpoints."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch

from medrlvr.data.schema import ExampleBatch
from medrlvr.rollout.base import EngineBuilder, RolloutEngine
from medrlvr.training.numerics import NumericsGuard, nonfinite
from medrlvr.training.optim import load_lr_scheduler
from medrlvr.training.strategies import clip_and_step, deepspeed_engine


class PolicyModule(L.LightningModule):
    """A policy trained with manual optimisation and the rollout engine generating from it (given, or built by
    ``build_engine`` when fit starts). One ``training_step`` is one iteration, numbered on from
    ``first_iteration`` (a resumed run's); after each, ``last_metrics`` and ``last_samples`` hold what it logged.

    Subclasses give :meth:`rollout_policy` and, in ``configure_optimizers``, set ``self.scheduler`` (stepped
    after each optimizer step by :meth:`step_optimizer`). Iterations with a skipped update are counted by
    ``guard`` (its metrics, e.g. ``numerics/skipped_update``, are logged at each iteration).
    """

    def __init__(
        self,
        engine: RolloutEngine | None,
        build_engine: EngineBuilder | None,
        guard: NumericsGuard | None,
        first_iteration: int,
    ) -> None:
        super().__init__()
        if engine is None and build_engine is None:
            raise ValueError(f"{type(self).__name__} needs an engine or build_engine")
        self.automatic_optimization = False
        self.engine = engine
        self._build_engine = build_engine
        self.guard = guard or NumericsGuard(max_bad_updates=1)
        self.first_iteration = first_iteration
        self.iteration = first_iteration
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_samples: list[dict[str, Any]] = []

    def rollout_policy(self) -> torch.nn.Module:
        """The trained policy the rollout engine generates from (a peft model with LoRA)."""
        raise NotImplementedError

    def on_fit_start(self) -> None:
        """Build the rollout engine once: every process exists now, the strategy has set up their process
        group and placed the model on its device."""
        if self.engine is None:
            self.engine = self._build_engine(self.rollout_policy(), self.trainer)  # type: ignore[misc]

    def on_train_start(self) -> None:
        """Push the policy into the rollout engine once the strategy has placed it (and a resumed checkpoint
        has been loaded into it), so the first generation comes from the weights being trained."""
        self.engine.sync_weights(self.rollout_policy())  # type: ignore[union-attr]

    def merged_policy(self) -> torch.nn.Module:
        """The policy as a plain transformers model (LoRA merged into a copy), ready for ``save_pretrained``."""
        adapters = self.lora_policy()
        return self.rollout_policy() if adapters is None else copy.deepcopy(adapters).merge_and_unload()

    def lora_policy(self) -> torch.nn.Module | None:
        """The policy with its LoRA adapters (a peft model), or None when the whole model trains."""
        policy = self.rollout_policy()
        return policy if hasattr(policy, "merge_and_unload") else None

    def scheduler_state(self) -> dict[str, Any]:
        """The learning-rate schedule's ``state_dict`` (JSON-serialisable), for checkpoints."""
        return self.scheduler.state_dict()  # type: ignore[union-attr]

    def load_scheduler_state(self, state: dict[str, Any]) -> None:
        """Resume the learning-rate schedule from :meth:`scheduler_state`."""
        load_lr_scheduler(self.scheduler, state)  # type: ignore[arg-type]

    def transfer_batch_to_device(self, batch: ExampleBatch, device: torch.device, dataloader_idx: int) -> ExampleBatch:
        """Batches are questions (text); tensors are made on the right device later."""
        return batch

    def backward_unless_nonfinite(self, loss: torch.Tensor, weight: float, last: bool) -> bool:
        """Accumulate the gradient of ``weight × loss`` (a scalar: one micro-batch's loss, ``weight`` its share of
        the optimizer step's); ``last`` marks the step's last micro-batch. Returns whether the loss is non-finite
        on any process, in which case the step is dropped on all: without DeepSpeed the gradients are cleared;
        under DeepSpeed the non-finite gradient makes the engine drop the step and what it had accumulated."""
        optimizer = self.optimizers()
        engine = deepspeed_engine(self)
        # every process decides together, or the gradient all-reduce of the others would wait forever
        bad = self.trainer.strategy.reduce_boolean_decision(bool(nonfinite(loss=loss)), all=False)
        if engine is not None:
            engine.set_gradient_accumulation_boundary(bad or last)
            self.manual_backward(loss * weight, scale_wrt_gas=False)
        elif not bad:
            self.manual_backward(loss * weight)
        if bad:
            if engine is not None:
                optimizer.step()  # the engine sees the non-finite gradient and drops the step
            optimizer.zero_grad()
        return bad

    def step_optimizer(self, groups: list[list[torch.nn.Parameter]], max_grad_norm: float) -> list[float] | None:
        """Clip each of ``groups`` to ``max_grad_norm`` apart, step the optimizer and the learning-rate schedule;
        returns the groups' norms before clipping, or None when a non-finite gradient skipped the step."""
        norms, stepped = clip_and_step(self, self.optimizers(), groups, max_grad_norm)
        if not stepped:
            return None
        self.scheduler.step()  # type: ignore[union-attr]
        return norms
