"""Lightning callback: classify each PPO iteration's rollouts and log stage fractions, flags and lengths."""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from medrlvr.analysis.classifier import CompletionAnalysis, Stage
from medrlvr.analysis.dynamics import StageTracker, example_rows, iteration_metrics, stage_fractions
from medrlvr.config import AnalysisConfig
from medrlvr.data.schema import OPTION_LETTERS
from medrlvr.rewards.parsing import ParseRules


class StageAnalysisCallback(L.Callback):
    """Reads ``pl_module.last_samples`` after each iteration and logs :func:`iteration_metrics` at step = iteration,
    classifying completions with ``rules``, those of the training reward (and each sample's ``options``).

    Every ``every`` iterations (and at the first and last) it also logs up to ``cfg.examples_per_stage``
    classified completions per stage as the MLflow table ``stages/iteration_<n>.json``. The iteration's
    classifications stay in ``last_analyses`` (one per sample) for the completion table; ``fractions`` keeps
    the stage shares of every iteration this process classified (iteration → stage → share).
    """

    def __init__(self, cfg: AnalysisConfig, every: int, max_steps: int, rules: ParseRules = ParseRules()) -> None:
        self.cfg, self.every, self.max_steps, self.rules = cfg, every, max_steps, rules
        self.tracker = StageTracker(cfg)
        self.last_analyses: list[CompletionAnalysis] = []
        self.fractions: dict[int, dict[Stage, float]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"exploit_phase_at": self.tracker.exploit_phase_at, "recent_lengths": list(self.tracker.recent_lengths)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.exploit_phase_at = state_dict["exploit_phase_at"]
        self.tracker.recent_lengths = deque(state_dict.get("recent_lengths", []))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        iteration = pl_module.iteration
        samples = pl_module.last_samples
        analyses = self.last_analyses = self.tracker.classify_iteration(
            iteration,
            [(s["response"], s.get("letters", OPTION_LETTERS)) for s in samples],
            self.rules,
            [s.get("options") for s in samples],
        )
        logger = trainer.logger
        if logger is None or not samples:
            return
        self.fractions[iteration] = stage_fractions(analyses)
        logger.log_metrics(iteration_metrics(analyses), step=iteration)
        due = self.every > 0 and (iteration % self.every == 0 or iteration in (1, self.max_steps))
        if due and isinstance(logger, MLFlowLogger):
            rows = example_rows(samples, analyses, self.cfg.examples_per_stage)
            table = {key: [row[key] for row in rows] for key in rows[0]}
            logger.experiment.log_table(logger.run_id, data=table, artifact_file=f"stages/iteration_{iteration:05d}.json")
