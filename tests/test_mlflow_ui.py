"""The project's MLflow experiments are tagged as model training (MLflow's experiment kind)."""

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medrlvr.mlflow_ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING, local_ui, mark_model_training
from medrlvr.sweeping.sweep_tracking import SweepTracker


def test_an_experiment_is_marked_as_model_training(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e")
    mark_model_training(client, experiment_id)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_a_kind_set_by_the_user_is_kept(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    mark_model_training(client, experiment_id)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_kind_another_process_set_at_the_same_time_is_not_an_error(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("runs")
    insert = client.set_experiment_tag

    def concurrent_insert(experiment_id: str, key: str, value: str) -> None:
        insert(experiment_id, key, value)  # the other worker's row lands first; ours then violates the unique key
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: experiment_tags.key")

    client.set_experiment_tag = concurrent_insert
    mark_model_training(client, experiment_id)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING

    other = client.create_experiment("other")

    def failing_insert(experiment_id: str, key: str, value: str) -> None:
        raise MlflowException("database is locked")

    client.set_experiment_tag = failing_insert
    with pytest.raises(MlflowException, match="locked"):  # a failure that left no tag is still an error
        mark_model_training(client, other)


def test_a_sweep_marks_its_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "sweeps", "s", kind="grid", objective=None, direction="maximize", params=[])
    tracker.start()
    experiment = MlflowClient(uri).get_experiment_by_name("sweeps")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_a_local_ui_that_cannot_start_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"mlflow ui on http://127\.0\.0\.1:\d+ exited with code"):
        with local_ui("bogus-scheme://nowhere", timeout=120):
            pass
