"""Checks that fail fast, before a model is loaded or an MLflow run is opened, so nothing is half-written."""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError


def check_output_dir(path: Path, key: str = "trainer.output_dir") -> Path:
    """Create ``path`` if needed and prove it is writable; ConfigError naming ``key`` and the folder otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"{key}: cannot write to {path} ({err.strerror or err})") from err
    return path


OUTPUT_LOCK = ".lock"


@contextmanager
def output_dir_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path/.lock`` for the block, so one training at a time writes to ``path``.

    The lock file names its holder (process id and host); a second training on the same folder stops at once
    with a ConfigError naming it. The operating system releases the lock when the process ends, however it ends.
    """
    fd = os.open(path / OUTPUT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"trainer.output_dir: {path} is in use by another training ({holder});"
                " wait for it to end or choose another trainer.output_dir"
            ) from err
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (ConfigError) when the MLflow store cannot be used: an HTTP tracking server that does not
    answer (instead of retrying for minutes), a SQLite store that cannot be created, or any other store MLflow
    refuses (e.g. a ``file://`` store, which MLflow 3 no longer writes by default)."""
    if uri.startswith("sqlite:///"):
        create_sqlite_store(uri)
    elif uri.startswith(("http://", "https://")):
        check_tracking_server(uri, timeout)
    else:
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except Exception as err:
            raise ConfigError(f"logger.tracking_uri: cannot use the MLflow store {uri} ({first_line(err)})") from err


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (MLflow's run over several lines)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def check_run_in_store(uri: str, run_id: str, checkpoint: Path) -> None:
    """ConfigError when the MLflow run a checkpoint continues is not in the store at ``uri``."""
    try:
        MlflowClient(uri).get_run(run_id)
    except Exception as err:
        raise ConfigError(
            f"logger.tracking_uri: the run of checkpoint {checkpoint} ({run_id}) is not in the MLflow store {uri}"
            f" ({first_line(err)}); resume with the tracking URI the run was started with"
        ) from err


def check_tracking_server(uri: str, timeout: float) -> None:
    """ConfigError when the MLflow server at ``uri`` does not answer its health check within ``timeout`` s."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"logger.tracking_uri: cannot reach the MLflow server at {uri} ({err})") from err


def create_sqlite_store(tracking_uri: str) -> None:
    """Create (or migrate) a ``sqlite:///`` MLflow store under a file lock beside the database.

    MLflow creates its tables on first use without a lock: two trainings or sweep trials started together on a
    fresh ``mlflow.db`` both run the schema migration, and all but one fail.
    """
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock"):
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as err:
        raise ConfigError(f"logger.tracking_uri: cannot use the MLflow store {tracking_uri} ({err})") from err
