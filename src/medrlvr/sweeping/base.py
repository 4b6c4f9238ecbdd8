"""What the project's sweepers share: the Hydra context and the launcher that runs their trials."""

from __future__ import annotations

import sys

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from medrlvr.config import ConfigError
from medrlvr.sweeping.objective import check_objective


class LaunchingSweep:
    """Keeps the sweep's config and context and instantiates the configured launcher at ``setup``, once the
    config is known not to tune on a test split."""

    objective: str | None = None
    config: DictConfig | None = None
    hydra_context: HydraContext | None = None
    launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        try:
            check_objective(config, self.objective)
        except ConfigError as err:  # a one-line error before any trial runs, with the exit code of config errors
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
