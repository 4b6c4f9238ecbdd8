"""How the project's MLflow experiments present themselves in MLflow's UI."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow 3's value for model training. MLflow 3.17's UI reads it (it routes a genai_development experiment to its
# traces) but a fresh browser still lands on the GenAI view of its switch: README, The MLflow UI.
MODEL_TRAINING = "custom_model_development"


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag the experiment as model training, unless its kind was set already (by a user or the UI)."""
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
