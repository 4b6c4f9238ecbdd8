"""End-to-end sweeps of the real CLI on the tiny model (experiment=smoke): grid multirun, Optuna resume with a
crashing trial, two sweepers in parallel on the same stores, the MLflow server, and the report."""

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from medrlvr.mlflow_ui import local_ui

pytestmark = pytest.mark.slow
SMOKE = [
    "experiment=smoke", "trainer.num_threads=1", "trainer.eval_before=false", "trainer.save_model=false",
    "hydra.launcher.stream_output=false",
]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
PNG = b"\x89PNG\r\n\x1a\n"


def sweep_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "medrlvr.train", "--multirun", *overrides, *SMOKE]


def run_sweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(sweep_command(*overrides), cwd=cwd, capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def runs_by_role(client: MlflowClient, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    trials = {int(r.data.tags["trial"]): r for r in runs if "trial" in r.data.tags}
    assert len(parents) + len(trials) == len(runs)
    return parents, trials


@pytest.fixture(scope="module")
def kl_grid(tmp_path_factory) -> Path:
    """A two-point KL grid (the sweep file's values narrowed on the command line), also evaluated on the OOD
    test split."""
    cwd = tmp_path_factory.mktemp("kl_grid")
    run_sweep(cwd, "+sweep=kl_coef", "algo.kl_coef=0.0,0.05", "trainer.eval_ood=true")
    return cwd


def test_grid_multirun_records_each_trial_in_one_experiment(kl_grid: Path):
    client = MlflowClient(f"sqlite:///{kl_grid / 'mlflow.db'}")
    assert {e.name for e in client.search_experiments()} <= {"Default", "sweep-kl_coef"}
    (parent,), trials = runs_by_role(client, "sweep-kl_coef")
    assert sorted(trials) == [0, 1]
    for number, kl in ((0, "0.0"), (1, "0.05")):
        run = trials[number]
        assert run.info.status == "FINISHED" and run.info.run_name == f"kl_coef-{number}"
        assert run.data.tags["sweep"] == "kl_coef" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert f"algo.kl_coef={kl}" in run.data.tags["overrides"].split()
        assert run.data.params["algo/kl_coef"] == kl and run.data.params["trainer/max_steps"] == "2"
        assert run.data.metrics["sweep/objective"] == run.data.metrics["eval/bundled_validation/accuracy"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == [1, 2]
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_kind"] == "grid"
    assert parent.data.tags["sweep_params"] == "algo.kl_coef"
    assert parent.data.metrics["trials_completed"] == 2 and parent.data.metrics["trials_failed"] == 0
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/trials.csv", "report/objective_vs_algo.kl_coef.png", "report/best_trials_curves.png"
    }
    (sweep_dir,) = (kl_grid / "multirun" / "kl_coef").iterdir()
    for number in (0, 1):  # each trial was its own `python -m medrlvr.train` run, not a job inside the sweeper
        assert "mode: RUN" in (sweep_dir / str(number) / ".hydra" / "hydra.yaml").read_text()
        assert json.loads((sweep_dir / str(number) / "job_return.json").read_text())["status"] == "COMPLETED"


def test_report_cli_writes_table_and_plots(kl_grid: Path):
    out = kl_grid / "report"
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.report", "sweep-kl_coef", "--out", str(out)],
        cwd=kl_grid, capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| trial | status | algo.kl_coef | objective (return value) | eval/bundled_validation/accuracy |" in result.stdout
    rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and {row.split(",")[2] for row in rows[1:]} == {"0.0", "0.05"}
    assert "_ood" not in rows[0]  # trials are compared on the validation split only
    client = MlflowClient(f"sqlite:///{kl_grid / 'mlflow.db'}")
    _, trials = runs_by_role(client, "sweep-kl_coef")
    best = max(trials.values(), key=lambda run: (run.data.metrics["sweep/objective"], -int(run.data.tags["trial"])))
    test_accuracy = best.data.metrics["eval/bundled_ood/accuracy"]
    apart = result.stdout.split("Test numbers of the best trial (not used to choose it):")[1]
    assert f"Best trial #{best.data.tags['trial']} (run {best.info.run_id})" in apart
    assert f"| eval/bundled_ood/accuracy | {test_accuracy:.4g} |" in apart
    assert f"| eval/bundled_ood/accuracy | {test_accuracy:.4g} |" in (out / "best_trial_test.md").read_text()
    parent = client.get_run(best.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["best_trial/eval/bundled_ood/accuracy"] == test_accuracy
    for name in ("objective_vs_algo.kl_coef.png", "best_trials_curves.png"):
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 5000


def http_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_mlflow_server_serves_the_sweep_runs(kl_grid: Path):
    with local_ui(f"sqlite:///{kl_grid / 'mlflow.db'}", timeout=120) as base:
        experiment = http_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=sweep-kl_coef")
        found = http_json(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment["experiment"]["experiment_id"]], "filter": "tags.sweep = 'kl_coef'"},
        )
    runs = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in found["runs"]]
    assert sorted(tags.get("trial", "parent") for tags in runs) == ["0", "1", "parent"]
    params = {
        tags["trial"]: {p["key"]: p["value"] for p in run["data"]["params"]}["algo/kl_coef"]
        for tags, run in zip(runs, found["runs"]) if "trial" in tags
    }
    assert params == {"0": "0.0", "1": "0.05"}


def test_optuna_sweep_resumes_and_records_a_crashing_trial(tmp_path: Path):
    crash = "hydra.sweeper.enqueue_trials=[{algo.clip_range:1.5}]"  # outside (0, 1): the trial's config check fails
    run_sweep(tmp_path, "+sweep=optuna", "hydra.sweeper.n_trials=2", crash)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="sweep-optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]

    run_sweep(tmp_path, "+sweep=optuna", "hydra.sweeper.n_trials=3", crash)  # resume: one more trial
    study = optuna.load_study(study_name="sweep-optuna", storage=storage)
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert "algo.clip_range" in study.trials[0].user_attrs["error"]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,), trials = runs_by_role(client, "sweep-optuna")
    assert sorted(trials) == [0, 1, 2] and parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_study"] == "sweep-optuna" and parent.data.tags["sweep_kind"] == "optuna"
    assert trials[0].info.status == "FAILED" and "algo.clip_range" in trials[0].data.tags["error"]
    assert "algo.clip_range=1.5" in trials[0].data.tags["overrides"].split()
    for frozen in study.trials[1:]:
        run = trials[frozen.number]
        assert run.info.status == "FINISHED" and run.data.metrics["sweep/objective"] == frozen.value
        assert run.data.params["reward/name"] == frozen.params["reward"]
        for name, value in frozen.params.items():
            if name != "reward":
                assert float(run.data.params[name.replace(".", "/")]) == pytest.approx(value)
    assert parent.data.metrics["trials_completed"] == 2 and parent.data.metrics["trials_failed"] == 1
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/objective_vs_algo.clip_range.png" in report
    # importances only mean something when the trials scored differently (the tiny model often scores 0 twice)
    differ = len({t.value for t in study.trials[1:]}) > 1
    assert ("report/param_importances.png" in report) == differ


def test_optuna_sweep_samples_a_reward_s_parameters_only_in_trials_that_choose_it(tmp_path: Path):
    pinned = "hydra.sweeper.enqueue_trials=[{reward:default},{reward:length_penalty}]"  # the rest is sampled
    run_sweep(tmp_path, "+sweep=optuna", "hydra.sweeper.n_trials=2", pinned)
    study = optuna.load_study(study_name="sweep-optuna", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    plain, penalised = study.trials
    assert [plain.state.name, penalised.state.name] == ["COMPLETE", "COMPLETE"]
    assert [plain.params["reward"], penalised.params["reward"]] == ["default", "length_penalty"]
    assert not {"reward.penalty_coef", "reward.min_reasoning_words"} & set(plain.params)
    assert {"reward.penalty_coef", "reward.min_reasoning_words"} <= set(penalised.params)
    assert {"algo.kl_coef", "algo.clip_range", "data.option_count"} <= set(plain.params) & set(penalised.params)

    _, trials = runs_by_role(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "sweep-optuna")
    plain_run, penalised_run = trials[plain.number].data, trials[penalised.number].data
    assert "reward.penalty_coef=" not in plain_run.tags["overrides"] and plain_run.params["reward/name"] == "default"
    assert f"reward.penalty_coef={penalised.params['reward.penalty_coef']}" in penalised_run.tags["overrides"].split()
    assert float(penalised_run.params["reward/penalty_coef"]) == pytest.approx(penalised.params["reward.penalty_coef"])


def test_two_sweepers_in_parallel_share_the_sqlite_stores(tmp_path: Path):
    mlflow_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    MlflowClient(mlflow_uri).search_experiments()  # the stores exist, as when a second worker joins a sweep
    optuna.create_study(study_name="sweep-optuna", storage=storage, direction="maximize")
    workers = [
        subprocess.Popen(
            sweep_command("+sweep=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / name}"),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
        )
        for name in ("a", "b")
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)

    study = optuna.load_study(study_name="sweep-optuna", storage=storage)
    first, second = study.trials
    assert [first.state.name, second.state.name] == ["COMPLETE", "COMPLETE"]
    assert second.datetime_start < first.datetime_complete and first.datetime_start < second.datetime_complete
    assert sorted(len(list((tmp_path / name).glob("trial_*"))) for name in ("a", "b")) == [1, 1]

    client = MlflowClient(mlflow_uri)
    (parent,), trials = runs_by_role(client, "sweep-optuna")
    assert sorted(trials) == [0, 1]
    for run in trials.values():
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert [trials[t.number].data.metrics["sweep/objective"] for t in study.trials] == [t.value for t in study.trials]
    for db in ("mlflow.db", "optuna.db"):
        with sqlite3.connect(tmp_path / db) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
