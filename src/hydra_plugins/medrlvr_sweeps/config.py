"""Config schemas of medrlvr's Hydra plugins, registered in Hydra's ConfigStore when Hydra scans its plugins."""
# Hydra executes this module before registering it in sys.modules: no "from __future__ import annotations" here.


from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    """Cartesian grid over ``params`` (Hydra's ``a=1,2`` syntax), with one MLflow parent run per sweep."""

    _target_: str = "hydra_plugins.medrlvr_sweeps.plugins.GridSweeper"
    params: Dict[str, str] = field(default_factory=dict)
    # None: the task function's return value (held-out accuracy for medrlvr.train); else a metric of the trial run.
    objective: Optional[str] = None
    direction: str = "maximize"
    # Jobs per launch. None: the launcher's n_jobs (trials recorded round by round), else all at once.
    max_batch_size: Optional[int] = None


@dataclass
class OptunaSweeperConf:
    """TPE search (Optuna ask-and-tell) over ``params`` given as ``interval(..)``, ``range(..)``, ``choice(..)``."""

    _target_: str = "hydra_plugins.medrlvr_sweeps.plugins.OptunaSweeper"
    params: Dict[str, str] = field(default_factory=dict)
    # {categorical param: {its value: {param: search space}}}: parameters sampled only when the choice is that value.
    conditional: Dict[str, Any] = field(default_factory=dict)
    objective: Optional[str] = None
    direction: str = "maximize"
    # The study stops asking once it holds n_trials trials (finished, failed or running): re-running resumes.
    n_trials: int = 20
    # Trials asked per batch; they run in parallel when the launcher runs jobs in parallel.
    n_jobs: int = 1
    # None: the MLflow experiment name. None storage: sqlite:///<working directory>/optuna.db.
    study_name: Optional[str] = None
    storage: Optional[str] = None
    seed: Optional[int] = None
    n_startup_trials: int = 5
    # Parameter sets evaluated first (e.g. the defaults as a baseline); skipped when the study already has them.
    enqueue_trials: List[Dict[str, Any]] = field(default_factory=list)
    # A running trial whose sweeper stopped sending heartbeats for grace_period seconds is marked failed.
    heartbeat_interval: int = 60
    grace_period: int = 300


@dataclass
class SubprocessLauncherConf:
    """Runs each job as ``python -m <app> <overrides>`` in a fresh process, ``n_jobs`` at a time."""

    _target_: str = "hydra_plugins.medrlvr_sweeps.plugins.SubprocessLauncher"
    n_jobs: int = 1
    # Echo each trial's output, prefixed with its job number (always written to <job dir>/output.log).
    stream_output: bool = True


ConfigStore.instance().store(group="hydra/sweeper", name="medrlvr_grid", node=GridSweeperConf, provider="medrlvr")
ConfigStore.instance().store(group="hydra/sweeper", name="medrlvr_optuna", node=OptunaSweeperConf, provider="medrlvr")
ConfigStore.instance().store(
    group="hydra/launcher", name="medrlvr_subprocess", node=SubprocessLauncherConf, provider="medrlvr"
)
