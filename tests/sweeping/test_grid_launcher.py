"""Grid sweeper and subprocess launcher on a toy Hydra app: one process per job, crashes recorded, the sweep goes on."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

APP = '''
import os
import time
from pathlib import Path

import hydra
import mlflow

from medrlvr.config import LoggerConfig
from medrlvr.sweeping.tags import hydra_task_overrides, trial_run_name, trial_tags


@hydra.main(config_path=".", config_name="toy", version_base="1.3")
def main(cfg):
    logger = LoggerConfig(**cfg.logger)
    client = mlflow.MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id
    tags = trial_tags(logger, hydra_task_overrides())
    run = client.create_run(experiment, run_name=trial_run_name(logger), tags=tags)
    client.log_metric(run.info.run_id, "score", 100.0 * cfg.x)
    Path(cfg.out, f"pid_{cfg.x}").write_text(str(os.getpid()))
    if cfg.x == 3:
        time.sleep(600)
    if cfg.x == 0:
        raise RuntimeError("deliberate crash")
    client.set_terminated(run.info.run_id)
    return 10.0 * cfg.x


if __name__ == "__main__":
    main()
'''

CONFIG = """
defaults:
  - override hydra/sweeper: medrlvr_grid
  - override hydra/launcher: medrlvr_subprocess
  - _self_
x: 1
out: {out}
logger:
  tracking_uri: {uri}
  experiment_name: toy
  sweep: toy
  trial: null
  parent_run_id: null
hydra:
  sweep:
    dir: {out}/multirun
  sweeper:
    objective: score
    params:
      x: {values}
"""


def start_toy_sweep(tmp_path: Path, values: str) -> tuple[subprocess.Popen, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "toy.yaml").write_text(textwrap.dedent(CONFIG.format(out=tmp_path, uri=uri, values=values)))
    sweeper = subprocess.Popen(
        [sys.executable, "app.py", "--multirun", "hydra.launcher.stream_output=false"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C works even if ignored here
    )
    return sweeper, uri


def test_each_job_runs_in_its_own_process_and_a_crash_does_not_stop_the_grid(tmp_path: Path):
    sweeper, uri = start_toy_sweep(tmp_path, "0,1")
    output, _ = sweeper.communicate(timeout=300)
    assert sweeper.returncode == 0, output[-3000:]

    pids = {int((tmp_path / f"pid_{x}").read_text()) for x in range(2)}
    assert len(pids) == 2 and sweeper.pid not in pids
    jobs = tmp_path / "multirun"
    results = [json.loads((jobs / str(i) / "job_return.json").read_text()) for i in range(2)]
    assert results[0]["status"] == "FAILED" and "deliberate crash" in results[0]["error"]
    assert results[1] == {"status": "COMPLETED", "return_value": 10.0}
    assert "RuntimeError: deliberate crash" in (jobs / "0" / "output.log").read_text()
    assert "mode: RUN" in (jobs / "1" / ".hydra" / "hydra.yaml").read_text()

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    trials = {r.data.tags["trial"]: r for r in runs if r is not parent}
    assert sorted(trials) == ["0", "1"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
    assert trials["0"].info.status == "FAILED" and "deliberate crash" in trials["0"].data.tags["error"]
    assert trials["1"].data.metrics["sweep/objective"] == 100.0  # the named metric, not the return value
    assert trials["1"].info.status == "FINISHED" and trials["1"].data.tags["overrides"] == "x=1"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_completed"] == 1 and parent.data.metrics["trials_failed"] == 1
    assert parent.data.metrics["best_objective"] == 100.0 and parent.data.tags["best_trial"] == "1"

    with open(jobs / "report" / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["trial"], row["x"], row["score"], row["status"]) for row in rows] == [
        ("1", "1", "100", "FINISHED"), ("0", "0", "", "FAILED")
    ]
    assert (jobs / "report" / "objective_vs_x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupting_a_sweep_stops_its_running_trial_and_closes_the_runs(tmp_path: Path):
    sweeper, uri = start_toy_sweep(tmp_path, "3")
    pid_file, deadline = tmp_path / "pid_3", time.monotonic() + 180
    while not pid_file.exists():
        assert sweeper.poll() is None and time.monotonic() < deadline, sweeper.communicate()[0][-3000:]
        time.sleep(0.2)
    trial_pid = int(pid_file.read_text())
    sweeper.send_signal(signal.SIGINT)
    output, _ = sweeper.communicate(timeout=120)
    assert sweeper.returncode != 0, output[-3000:]
    try:
        os.kill(trial_pid, 0)
        raise AssertionError(f"trial process {trial_pid} still runs")
    except ProcessLookupError:
        pass

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert sorted((r.data.tags.get("trial", "parent"), r.info.status) for r in runs) == [
        ("0", "KILLED"), ("parent", "KILLED")
    ]
