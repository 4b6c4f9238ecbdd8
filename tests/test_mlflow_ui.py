"""The project's MLflow experiments are tagged as model training (MLflow's experiment kind)."""

import pytest
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
