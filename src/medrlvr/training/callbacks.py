"""Lightning callbacks: a one-line progress report per iteration and sample tables in MLflow."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

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


class SampleTableLogger(L.Callback):
    """Logs the iteration's completions as an MLflow table every ``every`` iterations (and at the last)."""

    def __init__(self, every: int, max_rows: int, max_steps: int) -> None:
        self.every, self.max_rows, self.max_steps = every, max_rows, max_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        iteration = pl_module.iteration
        due = self.every > 0 and (iteration % self.every == 0 or iteration in (1, self.max_steps))
        logger = trainer.logger
        if not due or not isinstance(logger, MLFlowLogger):
            return
        rows = pl_module.last_samples[: self.max_rows]
        table = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
        logger.experiment.log_table(logger.run_id, data=table, artifact_file=f"samples/iteration_{iteration:05d}.json")
