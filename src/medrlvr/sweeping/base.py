"""What the project's sweepers share: the Hydra context and the launcher that runs their trials."""

from __future__ import annotations

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LaunchingSweep:
    """Keeps the sweep's config and context and instantiates the configured launcher at ``setup``."""

    config: DictConfig | None = None
    hydra_context: HydraContext | None = None
    launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
