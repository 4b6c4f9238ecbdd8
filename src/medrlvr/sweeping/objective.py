"""What a sweep may tune on: its objective is computed on a validation split, never on a test split."""

from __future__ import annotations

import re

from omegaconf import DictConfig

from medrlvr.config import ConfigError, DataConfig, check_sweep_eval_split

# Metrics of the evaluations on other sets than data.eval_split (eval/after_ood/*, ...): test numbers.
HELD_OUT_METRIC = re.compile(r"^eval/(?:before|after)_[^/]+/")


def check_objective(config: DictConfig, objective: str | None) -> None:
    """Refuse a sweep whose objective is computed on a test split: an objective metric of a held-out evaluation
    (``hydra.sweeper.objective``) or, for the return value and ``eval/*`` metrics, ``data.eval_split``."""
    if objective and HELD_OUT_METRIC.match(objective):
        raise ConfigError(
            f"hydra.sweeper.objective: {objective!r} is measured on a held-out test set, and a sweep must not tune "
            "on test: use a metric of data.eval_split (eval/after/*) or null (the return value, eval/after/accuracy)"
        )
    data = config.get("data")
    if data is not None:
        split = DataConfig(eval_split=data.eval_split, test_split=data.test_split, ood_split=data.get("ood_split"))
        check_sweep_eval_split(split, sweeping=True)
