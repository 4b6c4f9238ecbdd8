"""What a sweep may tune on: its objective is computed on a validation split, never on a test split."""

from __future__ import annotations

from omegaconf import DictConfig

from medrlvr.config import ConfigError, DataConfig, check_sweep_eval_split
from medrlvr.data.compose import set_name


def held_out(metric: str, validation_set: str) -> bool:
    """Whether ``metric`` comes from an evaluation on another set than ``data.eval_split``'s (named
    ``validation_set``, see :func:`medrlvr.data.compose.set_name`): a test number."""
    return metric.startswith("eval/") and not metric.startswith(f"eval/{validation_set}/")


def check_objective(config: DictConfig, objective: str | None) -> None:
    """Refuse a sweep whose objective is computed on a test split: an objective metric of a held-out evaluation
    (``hydra.sweeper.objective``) or, for the return value and ``eval/*`` metrics, ``data.eval_split``."""
    data = config.get("data")
    if data is None:
        return
    validation = set_name(data.name, data.eval_split)
    if objective and held_out(objective, validation):
        raise ConfigError(
            f"hydra.sweeper.objective: {objective!r} is measured on a held-out test set, and a sweep must not tune "
            f"on test: use a metric of data.eval_split (eval/{validation}/*) or null (the return value, "
            f"eval/{validation}/accuracy after training)"
        )
    split = DataConfig(eval_split=data.eval_split, test_split=data.test_split, ood_split=data.get("ood_split"))
    check_sweep_eval_split(split, sweeping=True)
