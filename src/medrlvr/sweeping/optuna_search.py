"""``hydra/sweeper=medrlvr_optuna``: TPE search with Optuna's ask-and-tell API in a persistent study.

Search spaces use Hydra's override grammar, as in ``hydra.sweeper.params``::

    algo.kl_coef: tag(log, interval(1e-4, 0.1))   # FloatDistribution(log=True)
    algo.clip_range: interval(0.1, 0.3)           # FloatDistribution
    reward.min_reasoning_words: range(10, 60, 10) # IntDistribution(step=10)
    reward: choice(default, length_penalty)       # CategoricalDistribution

and ``hydra.sweeper.conditional`` holds parameters sampled only for one value of a categorical one (see
:mod:`medrlvr.sweeping.space`).

A plain value is passed to every trial unchanged. The study lives in ``storage`` (SQLite by default), so running
the same command again resumes it: the sweeper asks new trials until the study holds ``n_trials`` (complete,
failed or running). Several sweepers can share one study (e.g. one per machine). A crashed trial is told to the
study as failed and the search goes on; a trial whose sweeper died (no heartbeat for ``grace_period`` s) is
marked failed when a sweeper next starts.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from medrlvr.sweeping import tags as T
from medrlvr.sweeping.base import LaunchingSweep
from medrlvr.sweeping.space import SearchSpace
from medrlvr.sweeping.sweep_tracking import SweepTracker, save_multirun_config, stable_key

log = logging.getLogger(__name__)
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


@contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_ids: list[int], interval: int) -> Iterator[None]:
    """Record the trials' heartbeats every ``interval`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class OptunaSweep(LaunchingSweep):
    """Implementation of ``hydra/sweeper=medrlvr_optuna`` (fields documented in its config schema)."""

    def __init__(
        self,
        params: dict[str, str] | None = None,
        conditional: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        objective: str | None = None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str | None = None,
        storage: str | None = None,
        seed: int | None = None,
        n_startup_trials: int = 5,
        enqueue_trials: Sequence[dict[str, Any]] = (),
        heartbeat_interval: int = 60,
        grace_period: int = 300,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}")
        self.params = dict(params or {})
        self.conditional = {parent: dict(by_value) for parent, by_value in (conditional or {}).items()}
        self.objective = objective
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.study_name = study_name
        self.storage_url = storage or f"sqlite:///{Path.cwd().resolve() / 'optuna.db'}"
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.enqueue_trials = [dict(trial) for trial in enqueue_trials]
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    def sweep(self, arguments: list[str]) -> None:
        """Ask, run and tell trials until the study holds ``n_trials``; log the outcome to MLflow."""
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = SearchSpace.parse(parser, [f"{k}={v}" for k, v in self.params.items()] + arguments, self.conditional)
        storage = optuna.storages.RDBStorage(
            self.storage_url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
        )
        study = self._study(storage)
        storage_label = make_url(self.storage_url).render_as_string(hide_password=True)
        tracker = SweepTracker.from_config(
            self.config,
            kind="optuna",
            objective=self.objective,
            direction=self.direction,
            params=space.names,
            extra_tags={T.STUDY: study.study_name, T.STORAGE: storage_label},
            resume_key=stable_key(storage_label, study.study_name),
        )
        sweep_dir = save_multirun_config(self.config)
        with tracker.running(sweep_dir / "report"):
            study.set_user_attr("mlflow_experiment", tracker.experiment_name)
            study.set_user_attr("mlflow_parent_run_id", tracker.parent_run_id)
            job_index = 0
            while batch := self._ask(study):
                jobs = [space.overrides(space.sample(trial)) + tracker.trial_overrides(trial.number) for trial in batch]
                try:
                    with heartbeat(storage, [trial._trial_id for trial in batch], self.heartbeat_interval):
                        results = self.launcher.launch(jobs, initial_job_idx=job_index)
                except BaseException:
                    for trial in batch:
                        study.tell(trial, state=TrialState.FAIL)
                    raise
                job_index += len(batch)
                for trial, job, result in zip(batch, jobs, results):
                    value, error = tracker.record(trial.number, result)
                    trial.set_user_attr("overrides", " ".join(T.user_overrides(job)))
                    if value is None:
                        trial.set_user_attr("error", (error or "")[:2000])
                        study.tell(trial, state=TrialState.FAIL)
                    else:
                        study.tell(trial, value)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if completed:
            log.info("best trial #%d: %.4f with %s", study.best_trial.number, study.best_value, study.best_params)

    def _study(self, storage: optuna.storages.RDBStorage) -> optuna.Study:
        assert self.config is not None
        name = self.study_name or self.config.logger.experiment_name
        study = optuna.create_study(storage=storage, study_name=name, direction=self.direction, load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ValueError(f"study {name!r} in {self.storage_url} was created to {study.direction.name.lower()}")
        held = len(study.get_trials(deepcopy=False))
        # A resumed study continues the seeded sequence instead of replaying the first trials' samples.
        seed = None if self.seed is None else self.seed + held
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials)
        for params in self.enqueue_trials:
            study.enqueue_trial(params, skip_if_exists=True)
        log.info("Optuna study %r in %s: %d of %d trials so far", name, self.storage_url, held, self.n_trials)
        return study

    def _ask(self, study: optuna.Study) -> list[optuna.Trial]:
        """Up to ``n_jobs`` new trials, as many as the study still lacks (none when it is done); their parameters
        are sampled define-by-run (:meth:`SearchSpace.sample`), as the conditional ones depend on the others.

        Trials whose sweeper stopped sending heartbeats are marked failed first.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            optuna.storages.fail_stale_trials(study)
            missing = self.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
            return [study.ask() for _ in range(max(0, min(self.n_jobs, missing)))]
