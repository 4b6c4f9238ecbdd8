"""The SQLite MLflow store is created once when several processes start on a fresh database."""

import multiprocessing

import pytest
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError
from medrlvr.training.tracking import create_sqlite_store


def _create_and_log(uri: str, name: str) -> None:
    create_sqlite_store(uri)
    MlflowClient(uri).create_experiment(name)


def test_processes_starting_together_on_a_fresh_store_all_succeed(tmp_path):
    # Without the lock, 7 of 9 such processes failed in MLflow's schema migration (3 rounds of 3).
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_create_and_log, args=(uri, f"exp{i}")) for i in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    names = {experiment.name for experiment in MlflowClient(uri).search_experiments()}
    assert {"exp0", "exp1", "exp2"} <= names


def test_an_unusable_store_path_is_a_config_error_naming_the_uri(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=r"logger.tracking_uri: cannot use the MLflow store sqlite:///.*file/mlflow.db"):
        create_sqlite_store(uri)
