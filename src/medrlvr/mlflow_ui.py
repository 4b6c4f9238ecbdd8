"""How the project's MLflow experiments present themselves in MLflow's UI, and a local UI to look at them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow 3's value for model training. MLflow 3.17's UI reads it (it routes a genai_development experiment to its
# traces) but a fresh browser still lands on the GenAI view of its switch: README, The MLflow UI.
MODEL_TRAINING = "custom_model_development"


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training, unless its kind was set already (by a user, the UI or another
    process: two sweep workers starting together both find the tag missing, and the second insert fails)."""
    if EXPERIMENT_KIND_TAG in client.get_experiment(experiment_id).tags:
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    except MlflowException:
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:  # not a concurrent writer's tag
            raise


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_ui(store: str, timeout: float = 300.0) -> Iterator[str]:
    """``mlflow ui`` on ``store`` bound to 127.0.0.1 at a free port; yields its base URL once it answers
    ``/health`` and stops it (every process it started) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as log:
        # one web worker and no background-job consumers: a UI to look at, on a shared machine; its own process
        # group, so that stopping it stops every process it started
        server = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1",
            ],
            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    if server.poll() is not None:
                        state = f"exited with code {server.returncode}"
                    else:
                        state = f"did not answer within {timeout:.0f} s"
                    raise RuntimeError(f"mlflow ui on {url} {state}: {log.read()[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            _stop_group(server)


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s; a group already gone is fine."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
