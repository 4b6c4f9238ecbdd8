"""Pictures logged into a training run at its end (``figures/*.png``), from what the run holds in memory: the
reasoning-stage area plot, the reward / accuracy / format-rate curves over iterations, and the answer-letter
distribution of each evaluation set before vs after training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

from medrlvr.analysis.classifier import Stage
from medrlvr.analysis.dynamics import dominant_stage, stage_phases
from medrlvr.analysis.stage_report import letter_distribution_figure, stage_fractions_figure, training_curves_figure
from medrlvr.evaluation.policy import letter_shares

CURVES = {"reward": "mean score", "accuracy": "share correct", "format rate": "share without format error"}


def sample_curves(samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean score, accuracy and format rate of one iteration's completions (rows of ``last_samples``)."""
    n = len(samples)
    return {
        "reward": sum(s["score"] for s in samples) / n,
        "accuracy": sum(s["letter"] == s["answer"] for s in samples) / n,
        "format rate": sum(s["format_error"] is None for s in samples) / n,
    }


class TrainingHistory(L.Callback):
    """Keeps :func:`sample_curves` of every RL iteration this process ran (``curves``: iteration → name → value);
    SFT steps have none (their samples are the training targets, not scored completions)."""

    def __init__(self) -> None:
        self.curves: dict[int, dict[str, float]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.last_samples and "score" in pl_module.last_samples[0]:
            self.curves[pl_module.iteration] = sample_curves(pl_module.last_samples)


def letter_choices(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of evaluation ``records`` answering each letter, and ``none`` for those with no letter."""
    shares = {key[len("chosen_"):]: v for key, v in letter_shares(list(records)).items() if key.startswith("chosen_")}
    return shares | {"none": sum(r["letter"] is None for r in records) / len(records)}


def log_run_figures(
    client: MlflowClient,
    run_id: str,
    curves: Mapping[int, Mapping[str, float]],
    stages: Mapping[int, Mapping[Stage, float]],
    evaluations: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    boundary_min_iterations: int,
) -> list[str]:
    """Log the run's pictures; returns their artifact paths.

    ``curves``: :class:`TrainingHistory`'s; ``stages``: iteration → stage shares; ``evaluations``: evaluation
    set name (as in ``eval/<name>/*``) → ``{"before": records, "after": records}``, either may be missing.
    Pictures without data (no iteration ran, no evaluation) are left out."""
    figures: dict[str, plt.Figure] = {}
    if stages:
        iterations = sorted(stages)
        fractions = {stage: [stages[i][stage] for i in iterations] for stage in Stage}
        dominant = [dominant_stage(stages[i]) for i in iterations]
        boundaries = stage_phases(iterations, dominant, boundary_min_iterations)[1:]
        if len(iterations) > 1:  # an area needs two iterations
            figures["figures/stage_fractions.png"] = stage_fractions_figure(iterations, fractions, boundaries)
    if curves:
        iterations = sorted(curves)
        panel = {f"{name} ({meaning})": (iterations, [curves[i][name] for i in iterations]) for name, meaning in CURVES.items()}
        figures["figures/training_curves.png"] = training_curves_figure({"Training completions": panel}, [])
    for name, sets in evaluations.items():
        if sets:
            chosen = {label: letter_choices(records) for label, records in sets.items()}
            records = next(iter(sets.values()))
            true = {k[len("true_"):]: v for k, v in letter_shares(list(records)).items() if k.startswith("true_")}
            figures[f"figures/answer_letters_{name}.png"] = letter_distribution_figure(chosen, true)
    for path, fig in figures.items():
        client.log_figure(run_id, fig, path)
        plt.close(fig)
    return list(figures)
