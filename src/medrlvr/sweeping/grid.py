"""``hydra/sweeper=medrlvr_grid``: Hydra's cartesian grid, one MLflow parent run per sweep, crashes recorded.

Unlike Hydra's basic sweeper, a crashing trial does not stop the sweep: it is recorded as failed and the
remaining grid points run.
"""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper

from medrlvr.sweeping.base import LaunchingSweep
from medrlvr.sweeping.sweep_tracking import SweepTracker, save_multirun_config


def grid(overrides: list[Override]) -> list[list[str]]:
    """Cartesian product of the overrides (``a=1,2 b=x`` → ``[[a=1, b=x], [a=2, b=x]]``); later keys win."""
    axes: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{key}: the grid sweeper takes lists (a,b,c), choice() or range(), not intervals")
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*axes.values())]


class GridSweep(LaunchingSweep, Sweeper):
    """Implementation of ``hydra/sweeper=medrlvr_grid`` (``params`` use Hydra's ``key: a,b,c`` syntax)."""

    def __init__(
        self,
        params: dict[str, str] | None = None,
        objective: str | None = None,
        direction: str = "maximize",
        max_batch_size: int | None = None,
    ) -> None:
        self.params = dict(params or {})
        self.objective = objective
        self.direction = direction
        self.max_batch_size = max_batch_size

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        """Run every grid point and record each in MLflow.

        Jobs are launched ``max_batch_size`` at a time; by default as many as the launcher runs in parallel
        (``n_jobs``), or all at once for launchers without ``n_jobs`` (e.g. one SLURM job array).
        """
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        jobs = grid(overrides)
        swept = list(dict.fromkeys(o.key_or_group for o in overrides if o.is_sweep_override()))
        # One launch per round of parallel trials, so that each round is recorded as soon as it ends.
        size = self.max_batch_size or self.config.hydra.launcher.get("n_jobs") or len(jobs)
        sweep_dir = save_multirun_config(self.config)
        tracker = SweepTracker.from_config(
            self.config, kind="grid", objective=self.objective, direction=self.direction, params=swept
        )
        returns: list[list[JobReturn]] = []
        with tracker.running(sweep_dir / "report"):
            for start in range(0, len(jobs), size):
                batch = jobs[start : start + size]
                self.validate_batch_is_legal(batch)
                batch = [job + tracker.trial_overrides(start + i) for i, job in enumerate(batch)]
                results = list(self.launcher.launch(batch, initial_job_idx=start))
                for i, result in enumerate(results):
                    tracker.record(start + i, result)
                returns.append(results)
        return returns
