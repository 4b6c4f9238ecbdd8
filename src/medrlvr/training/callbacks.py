"""Lightning callback: a one-line progress report per iteration."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from medrlvr.progress import clock

log = logging.getLogger(__name__)


class ProgressPrinter(L.Callback):
    """Prints iteration, the module's headline metrics (reward, accuracy, format rate, KL for PPO; loss for
    SFT), mean response length, tokens/s, seconds per iteration and ETA."""

    FIELDS = (
        ("reward", "reward/mean", "{:+.3f}"),
        ("acc", "reward/accuracy", "{:.3f}"),
        ("format", "reward/format_rate", "{:.3f}"),
        ("kl", "kl/mean_per_sequence", "{:.4f}"),
        ("loss", "loss/sft", "{:.4f}"),
        ("len", "response/tokens_mean", "{:.0f}"),
        ("tok/s", "perf/generate_tokens_per_s", "{:.1f}"),
        ("train tok/s", "perf/train_tokens_per_s", "{:.1f}"),
        ("s/it", "perf/iteration_s", "{:.1f}"),
    )

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:  # metrics are already combined over processes
            return
        m = pl_module.last_metrics
        done = pl_module.iteration
        elapsed = time.perf_counter() - self.started
        eta = elapsed / (batch_idx + 1) * (self.max_steps - done)
        parts = [f"iter {done}/{self.max_steps}"]
        parts += [f"{label} {fmt.format(m[key])}" for label, key, fmt in self.FIELDS if key in m]
        log.info("%s | ETA %s", " | ".join(parts), clock(eta))
