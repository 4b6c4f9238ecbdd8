"""MLflow run lifecycle: reach the store before anything starts, resume a run without duplicate metrics,
and leave every run FINISHED, FAILED (with the exception text) or KILLED — never RUNNING."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError
from medrlvr.training.signals import Stopped

log = logging.getLogger(__name__)


class ResumableMLFlowLogger(MLFlowLogger):
    """An ``MLFlowLogger`` that, when continuing a run, drops values already logged at the same (key, step).

    Iterations between the last checkpoint and a crash are re-run on resume; their metrics were logged
    already, so they are not logged a second time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logged: set[tuple[str, int]] = set()
        if kwargs.get("run_id"):
            client = self.experiment
            for key in client.get_run(self.run_id).data.metrics:
                self.logged.update((key, m.step) for m in client.get_metric_history(self.run_id, key))

    def finalize(self, status: str = "success") -> None:
        """Ignored: Lightning calls it when ``fit`` returns, but the run goes on with the evaluation after
        training. :meth:`finish` ends a run that succeeded; :func:`terminal_status` one that did not."""

    def finish(self) -> None:
        """Mark the run FINISHED, after its last metric."""
        super().finalize("success")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        fresh = {key: value for key, value in metrics.items() if (key, step) not in self.logged}
        if fresh:
            super().log_metrics(fresh, step=step)


def open_run(logger: MLFlowLogger) -> str:
    """Create (or reopen) the run now, turning store errors into a ConfigError naming the URI."""
    try:
        return logger.run_id  # type: ignore[return-value]
    except Exception as err:
        raise ConfigError(f"logger.tracking_uri: cannot use the MLflow store {logger._tracking_uri} ({err})") from err


def reopen(client: MlflowClient, run_id: str) -> None:
    """Mark a resumed run RUNNING again (it was left FAILED or KILLED, or stayed RUNNING after a SIGKILL)."""
    client.update_run(run_id, status="RUNNING")


@contextmanager
def terminal_status(logger: MLFlowLogger) -> Iterator[None]:
    """On a stop by signal (:class:`Stopped`, or a KeyboardInterrupt) mark the run KILLED with tag
    ``stop_signal`` naming the signal; on any other exception FAILED with tags ``error`` and
    ``error_traceback``; then re-raise. (Success is marked by the caller with ``logger.finish()``.)"""
    try:
        yield
    except (Stopped, KeyboardInterrupt) as err:
        name = err.signal_name if isinstance(err, Stopped) else "SIGINT"
        logger.experiment.set_tag(logger.run_id, "stop_signal", name)
        logger.experiment.set_terminated(logger.run_id, "KILLED")
        raise
    except BaseException as err:
        client = logger.experiment
        client.set_tag(logger.run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        client.set_tag(logger.run_id, "error_traceback", "".join(traceback.format_exception(err))[-5000:])
        client.set_terminated(logger.run_id, "FAILED")
        raise
