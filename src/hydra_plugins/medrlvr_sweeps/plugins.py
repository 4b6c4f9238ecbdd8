"""Hydra plugin classes (Hydra only instantiates plugins defined under ``hydra_plugins``).

They import their implementation from :mod:`medrlvr.sweeping` when instantiated, so that Hydra's plugin scan
at every start stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class GridSweeper(Sweeper):
    """``hydra/sweeper=medrlvr_grid``: see :class:`medrlvr.sweeping.grid.GridSweep`."""

    def __init__(self, **kwargs: Any) -> None:
        from medrlvr.sweeping.grid import GridSweep

        self.impl = GridSweep(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=medrlvr_optuna``: see :class:`medrlvr.sweeping.optuna_search.OptunaSweep`."""

    def __init__(self, **kwargs: Any) -> None:
        from medrlvr.sweeping.optuna_search import OptunaSweep

        self.impl = OptunaSweep(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)


class SubprocessLauncher(Launcher):
    """``hydra/launcher=medrlvr_subprocess``: see :class:`medrlvr.sweeping.launcher.SubprocessLaunch`."""

    def __init__(self, **kwargs: Any) -> None:
        from medrlvr.sweeping.launcher import SubprocessLaunch

        self.impl = SubprocessLaunch(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.impl.launch(job_overrides, initial_job_idx)
