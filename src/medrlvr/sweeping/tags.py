"""MLflow tags shared by the sweepers, the trial runs and the report."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig

from medrlvr.config import LoggerConfig

SWEEP = "sweep"
TRIAL = "trial"
OVERRIDES = "overrides"
ERROR = "error"
PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests trial runs under their sweep's parent run
ROLE = "sweep_role"  # "parent" on the run that holds a sweep's summary
KIND = "sweep_kind"  # "grid" or "optuna"
OBJECTIVE = "sweep_objective"  # metric name, or RETURN_VALUE
DIRECTION = "sweep_direction"  # "maximize" or "minimize"
PARAMS = "sweep_params"  # the swept override keys, space separated
RESUME_KEY = "sweep_key"  # parent runs with the same key are one sweep (an Optuna study resumed or shared)
STUDY = "optuna_study"
STORAGE = "optuna_storage"

OBJECTIVE_METRIC = "sweep/objective"
RETURN_VALUE = "return_value"
INJECTED_KEYS = ("logger.parent_run_id", "logger.trial", "logger.tracking_uri")


def quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value (Hydra unescapes only backslashes before a quote)."""
    escaped = re.sub(r"(\\+)('|$)", lambda m: m.group(1) * 2 + m.group(2), value)
    return "'" + escaped.replace("'", "\\'") + "'"


def trial_overrides(tracking_uri: str, parent_run_id: str, trial: int) -> list[str]:
    """Overrides a sweeper adds to every trial: its run goes to the sweep's store, tagged and nested under the
    parent run (the store is explicit so that a trial in another working directory still finds it)."""
    return [
        f"logger.tracking_uri={quote(tracking_uri)}",
        f"logger.parent_run_id={parent_run_id}",
        f"logger.trial={trial}",
    ]


def user_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` without the ones a sweeper injects (what distinguishes one trial from another)."""
    return [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in INJECTED_KEYS]


def parse_overrides(text: str) -> dict[str, str]:
    """``key=value`` pairs of an ``overrides`` tag (``+``/``++``/``~`` prefixes dropped)."""
    pairs = (item.lstrip("+~").split("=", 1) for item in text.split())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def hydra_task_overrides() -> list[str]:
    """The running Hydra job's task overrides ([] outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def trial_tags(cfg: LoggerConfig, overrides: Sequence[str]) -> dict[str, str]:
    """Tags of a run started by a sweep: sweep name, trial number, overrides and the parent run."""
    if cfg.trial is None and cfg.sweep is None:
        return {}
    tags = {SWEEP: cfg.sweep or cfg.experiment_name, OVERRIDES: " ".join(user_overrides(overrides))}
    if cfg.trial is not None:
        tags[TRIAL] = str(cfg.trial)
    if cfg.parent_run_id:
        tags[PARENT] = cfg.parent_run_id
    return tags


def trial_run_name(cfg: LoggerConfig) -> str | None:
    """``<sweep>-<trial>`` for a sweep trial, else None (MLflow picks a name)."""
    if cfg.trial is None:
        return None
    return f"{cfg.sweep or cfg.experiment_name}-{cfg.trial}"
