"""The MLflow side of a sweep: one experiment, one parent run holding the summary, one nested run per trial.

Trials create their own runs (tagged by :mod:`medrlvr.sweeping.tags` from the overrides a sweeper adds); the
sweeper records each trial's objective on its run, marks crashed trials as failed (creating a run for a trial that
crashed before it could make one), and at the end logs the summary and the report to the parent run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from medrlvr.paths import artifact_location, default_tracking_uri
from medrlvr.mlflow_ui import mark_model_training
from medrlvr.sweeping import tags as T

log = logging.getLogger(__name__)
DIRECTIONS = ("maximize", "minimize")
# A run's start time is taken before its row is written: a worker that created its parent run waits this long
# before looking for one created earlier by another worker, so that an earlier run still being written is seen.
PARENT_SETTLE_SECONDS = 2.0


def stable_key(*parts: str) -> str:
    """A short stable key identifying one resumable sweep (e.g. an Optuna storage and study name)."""
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:16]


def save_multirun_config(config: DictConfig) -> Path:
    """Save the sweep's composed config as ``<sweep dir>/multirun.yaml`` (as Hydra's basic sweeper does)."""
    sweep_dir = Path(config.hydra.sweep.dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    return sweep_dir


class SweepTracker:
    """Parent run and trial bookkeeping of one sweep in one MLflow experiment."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        name: str,
        kind: str,
        objective: str | None,
        direction: str,
        params: Sequence[str],
        extra_tags: dict[str, str] | None = None,
        resume_key: str | None = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction must be one of {DIRECTIONS}, got {direction!r}")
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.name = name
        self.objective = objective
        self.resume_key = resume_key
        self.tags = {
            T.ROLE: "parent",
            T.SWEEP: name,
            T.KIND: kind,
            T.OBJECTIVE: objective or T.RETURN_VALUE,
            T.DIRECTION: direction,
            T.PARAMS: " ".join(params),
            **(extra_tags or {}),
            **({T.RESUME_KEY: resume_key} if resume_key else {}),
        }
        self.experiment_id = ""
        self.parent_run_id = ""
        self._pending: set[int] = set()  # trials launched by this process and not recorded yet

    @classmethod
    def from_config(cls, config: DictConfig, **kwargs) -> SweepTracker:
        """A tracker on the sweep's ``logger`` settings (store, experiment, sweep name)."""
        logger = config.logger
        uri = logger.tracking_uri or default_tracking_uri()
        return cls(uri, logger.experiment_name, logger.sweep or logger.experiment_name, **kwargs)

    def start(self) -> str:
        """Create (or, for a resumable sweep, reopen) the parent run; returns its id."""
        self.experiment_id = self._experiment_id()
        mark_model_training(self.client, self.experiment_id)
        self.parent_run_id = self._parent_run_id()
        log.info("MLflow experiment %r, sweep parent run %s", self.experiment_name, self.parent_run_id)
        return self.parent_run_id

    @contextmanager
    def running(self, report_dir: Path) -> Iterator[SweepTracker]:
        """Start the sweep, and on leaving log its summary and report and close the parent run with its outcome."""
        self.start()
        status = "FAILED"
        try:
            yield self
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.finish(status, report_dir)

    def trial_overrides(self, trial: int) -> list[str]:
        """Overrides that send trial ``trial``'s run to this sweep (see :func:`tags.trial_overrides`)."""
        self._pending.add(trial)
        return T.trial_overrides(self.tracking_uri, self.parent_run_id, trial)

    def record(self, trial: int, job: JobReturn) -> tuple[float | None, str | None]:
        """Record a finished trial: ``(objective, None)`` on success, ``(None, error)`` when it failed."""
        self._pending.discard(trial)
        run = self.trial_run(trial)
        if job.status == JobStatus.COMPLETED:
            value, error = self._objective(job, run)
        else:
            value, error = None, _describe(job._return_value)
        if run is None:
            run = self._stub_run(trial, job.overrides or [])
        run_id = run.info.run_id
        if value is not None:
            self.client.log_metric(run_id, T.OBJECTIVE_METRIC, value)
            self.client.log_metric(self.parent_run_id, "trial_objective", value, step=trial)
            log.info("trial %d: objective %.4f (run %s)", trial, value, run_id)
        else:
            self.client.set_tag(run_id, T.ERROR, (error or "")[:5000])
            log.warning("trial %d failed: %s", trial, error)
        if run.info.status in ("RUNNING", "SCHEDULED"):
            self.client.set_terminated(run_id, "FINISHED" if value is not None else "FAILED")
        return value, error

    def trial_run(self, trial: int) -> Run | None:
        """The run of trial ``trial`` of this sweep, if the trial created one."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{T.PARENT}` = '{self.parent_run_id}' and tags.{T.TRIAL} = '{trial}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def finish(self, status: str, report_dir: Path) -> None:
        """Log the summary and the report (table, plots) to the parent run, then close it with ``status``.

        Runs of this sweeper's trials that were still running (an interrupted sweep) are closed as KILLED.
        """
        from medrlvr.sweeping import sweep_report

        for trial in sorted(self._pending):
            run = self.trial_run(trial)
            if run is not None and run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, "KILLED")
        try:
            sweep = sweep_report.load_sweep(self.client, self.parent_run_id)
            sweep_report.log_summary(self.client, sweep)
            sweep_report.write_report(self.client, sweep, report_dir)
        except Exception:
            log.exception("could not write the sweep report; try: python -m medrlvr.report %s", self.experiment_name)
        self.client.set_terminated(self.parent_run_id, status)

    def _objective(self, job: JobReturn, run: Run | None) -> tuple[float | None, str | None]:
        if self.objective is None:
            raw = job.return_value
        elif run is None or self.objective not in run.data.metrics:
            return None, f"objective metric {self.objective!r} is not in the trial's MLflow run"
        else:
            raw = run.data.metrics[self.objective]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None, f"objective {raw!r} is not a number"
        if not math.isfinite(value):
            return None, f"objective is {value}"
        return value, None

    def _stub_run(self, trial: int, overrides: Sequence[str]) -> Run:
        """A run for a trial that crashed before creating its own, so the UI lists it."""
        tags = {
            T.SWEEP: self.name,
            T.TRIAL: str(trial),
            T.OVERRIDES: " ".join(T.user_overrides(overrides)),
            T.PARENT: self.parent_run_id,
        }
        return self.client.create_run(self.experiment_id, run_name=f"{self.name}-{trial}", tags=tags)

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment_name, artifact_location=artifact_location(self.tracking_uri)
            )
        except MlflowException:
            experiment = self.client.get_experiment_by_name(self.experiment_name)  # created concurrently
            if experiment is None:
                raise
            return experiment.experiment_id

    def _parent_run_id(self) -> str:
        if self.resume_key:
            existing = self._parents()
            if existing:
                self.client.update_run(existing[0].info.run_id, status="RUNNING")
                return existing[0].info.run_id
        run_id = self.client.create_run(self.experiment_id, run_name=self.name, tags=self.tags).info.run_id
        if self.resume_key:
            time.sleep(PARENT_SETTLE_SECONDS)
            first = self._parents()[0].info.run_id  # another worker may have created one at the same time
            if first != run_id:
                self.client.delete_run(run_id)
                return first
        return run_id

    def _parents(self) -> list[Run]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{T.RESUME_KEY} = '{self.resume_key}'",
            order_by=["attributes.start_time ASC"],
        )


def _describe(error: object) -> str:
    return f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
