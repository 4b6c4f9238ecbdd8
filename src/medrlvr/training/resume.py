"""Resuming with a changed config: which settings may change when a run continues from a checkpoint.

A checkpoint's ``state.json`` holds the resolved config of the run that wrote it. On resume the new config is
compared with it before any MLflow run is opened: settings that change what is trained (model, data, reward,
rollout, the algorithm's shape) are refused, naming each difference; the settings in :data:`CHANGEABLE` may
change and are returned, to be recorded on the run.
"""

from __future__ import annotations

import logging
from typing import Any

from medrlvr.config import ConfigError
from medrlvr.training.checkpointing import STATE, Checkpoint

log = logging.getLogger(__name__)

# Settings a resumed run may change: the length of the run, the KL coefficients and learning rates (no state
# depends on them), and logging, evaluation and checkpointing. `resume` itself and the output folder are how
# a run is resumed; a changed tracking URI must hold the run (checked before the run is reopened).
CHANGEABLE = (
    "trainer.max_steps",
    "algo.kl_coef",
    "algo.kl_loss_coef",
    "algo.actor_lr",
    "algo.critic_lr",
    "trainer.log_samples_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.max_bad_updates",
    "trainer.num_threads",
    "trainer.eval_after",
    "trainer.eval_every",
    "trainer.log_system_metrics",
    "trainer.save_model",
    "trainer.log_model",
    "trainer.output_dir",
    "logger.tracking_uri",
    "logger.samples_per_table",
    "resume",
)

Change = tuple[Any, Any]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _Absent:
    """The value of a key one of two configs does not have."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Change]:
    """``(old, new)`` by flattened key, sorted, for every key whose value differs (or is :data:`ABSENT` on one
    side)."""
    before, after = flatten(old), flatten(new)
    pairs = {key: (before.get(key, ABSENT), after.get(key, ABSENT)) for key in sorted(before.keys() | after.keys())}
    return {key: (a, b) for key, (a, b) in pairs.items() if a != b}


def describe(changes: dict[str, Change]) -> str:
    """``key: old -> new`` for each change, on one line."""
    return ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume_config(checkpoint: Checkpoint, config: dict[str, Any]) -> dict[str, Change]:
    """The changeable settings that differ from ``checkpoint``'s config (``resume`` left out); ConfigError
    naming every other difference. Checkpoints written without a config are not checked (a warning says so)."""
    saved = checkpoint.state.get("config")
    if saved is None:
        log.warning("%s holds no config (an older checkpoint): the new config is not checked against it",
                    checkpoint.path / STATE)
        return {}
    changes = differences(saved, config)
    refused = {key: change for key, change in changes.items() if key not in CHANGEABLE}
    if refused:
        raise ConfigError(
            f"resume: settings differ from the checkpoint's ({checkpoint.path / STATE}): {describe(refused)};"
            f" a resumed run may change only {', '.join(CHANGEABLE[:-1])}"
        )
    return {key: change for key, change in changes.items() if key != "resume"}
