"""Run each Hydra job in a fresh process: ``python -m <app> <overrides>``, ``n_jobs`` at a time.

Hydra's basic launcher calls the task function again and again in one process, so engines, process groups and
memory leak from one trial into the next. Here every job is a new interpreter started with the job's overrides
and ``hydra.run.dir`` set to the job's sweep subdirectory. A callback in the child writes the job's status and
return value to ``job_return.json``; the child's output goes to ``output.log`` in the same folder. A job that
crashes (exception, non-zero exit, killed) comes back as a failed :class:`JobReturn`, never as an exception.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.experimental.callback import Callback
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from medrlvr.sweeping.tags import quote

log = logging.getLogger(__name__)

RESULT_FILE = "job_return.json"
OUTPUT_FILE = "output.log"
CALLBACK_KEY = "medrlvr_job_return"
# Hydra overrides of the sweep itself; the child runs one job in RUN mode.
_SWEEP_ONLY = (
    "hydra.mode", "hydra/sweeper", "hydra/launcher", "hydra.sweeper", "hydra.launcher", "hydra.sweep", "hydra.run"
)


class JobReturnWriter(Callback):
    """Hydra callback: writes the job's status and return value (or error) to ``<output dir>/job_return.json``."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            record = {"status": "COMPLETED", "return_value": value if _is_json(value) else repr(value)}
        else:
            error = job_return._return_value
            record = {"status": "FAILED", "error": f"{type(error).__name__}: {error}"}
        Path(config.hydra.runtime.output_dir, RESULT_FILE).write_text(json.dumps(record))


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def entry_command() -> list[str]:
    """How this app was started: ``[python, -m, module]`` or ``[python, script]``."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    return [sys.executable, str(Path(sys.argv[0]).resolve())]


@dataclass(frozen=True)
class Job:
    """One job: its number, overrides, composed config and output folder."""

    index: int
    overrides: list[str]
    config: DictConfig
    folder: Path


class SubprocessLaunch:
    """Implementation of ``hydra/launcher=medrlvr_subprocess``."""

    def __init__(self, n_jobs: int = 1, stream_output: bool = True) -> None:
        if n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs must be >= 1, got {n_jobs}")
        self.n_jobs = n_jobs
        self.stream_output = stream_output
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self._running: dict[int, subprocess.Popen] = {}
        self._echo_lock = threading.Lock()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Run the jobs (``n_jobs`` at a time) and return one JobReturn per job, in order."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        jobs = [self._job(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        log.info("Launching %d jobs, %d at a time, each in a fresh process", len(jobs), self.n_jobs)
        pool = ThreadPoolExecutor(self.n_jobs)
        try:
            return list(pool.map(self._run, jobs))
        except BaseException:
            self._stop_running()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stop_running(self, grace_s: float = 10.0) -> None:
        """Terminate the running jobs (interrupted sweep); kill those still alive after ``grace_s``."""
        processes = list(self._running.values())
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

    def _job(self, index: int, overrides: list[str]) -> Job:
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = str(index)
            config.hydra.job.num = index
        folder = Path(config.hydra.sweep.dir, str(config.hydra.sweep.subdir)).resolve()
        return Job(index, overrides, config, folder)

    def command(self, job: Job) -> list[str]:
        """The child's command line: the job's overrides, the parent's other Hydra overrides, the job folder."""
        assert self.config is not None
        passthrough = [o for o in self.config.hydra.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
        return [
            *entry_command(),
            *job.overrides,
            *passthrough,
            f"hydra.run.dir={quote(str(job.folder))}",
            f"++hydra.callbacks.{CALLBACK_KEY}._target_={JobReturnWriter.__module__}.{JobReturnWriter.__name__}",
        ]

    def _run(self, job: Job) -> JobReturn:
        job.folder.mkdir(parents=True, exist_ok=True)
        (job.folder / RESULT_FILE).unlink(missing_ok=True)
        log.info("#%d : %s -> %s", job.index, " ".join(filter_overrides(job.overrides)), job.folder)
        start = time.perf_counter()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(job.folder / OUTPUT_FILE, "w", buffering=1) as output:  # line-buffered: tail -f works
            process = subprocess.Popen(
                self.command(job), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            self._running[job.index] = process
            try:
                self._copy_output(job.index, process, output)
                code = process.wait()
            finally:
                self._running.pop(job.index, None)
        result = self._result(job, code)
        log.info("#%d : %s in %.0f s", job.index, result.status.name.lower(), time.perf_counter() - start)
        return result

    def _copy_output(self, index: int, process: subprocess.Popen, output) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.write(line)
            if self.stream_output:
                with self._echo_lock:
                    sys.stdout.write(f"[#{index}] {line}")
                    sys.stdout.flush()

    def _result(self, job: Job, code: int) -> JobReturn:
        ret = JobReturn(
            overrides=job.overrides,
            cfg=job.config,
            hydra_cfg=OmegaConf.create({"hydra": job.config.hydra}),
            working_dir=str(job.folder),
            task_name=job.config.hydra.job.name,
        )
        path = job.folder / RESULT_FILE
        record = json.loads(path.read_text()) if path.is_file() else {}
        if code == 0 and record.get("status") == "COMPLETED":
            ret.status = JobStatus.COMPLETED
            ret.return_value = record["return_value"]
            return ret
        ret.status = JobStatus.FAILED
        reason = record.get("error") or f"exit code {code}; last output: {_tail(job.folder / OUTPUT_FILE)}"
        ret.return_value = RuntimeError(f"job #{job.index} failed ({reason}); see {job.folder / OUTPUT_FILE}")
        return ret


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
