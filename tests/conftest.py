"""Shared fixtures: one torch thread per test process, the tiny model's tokenizer, and MLflow tables read back."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from medrlvr.models.loading import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture(scope="session")
def load_mlflow_table():
    """``load(uri, experiment_id, run_id, name)``: ``mlflow.load_table``'s rows of one run's table. MLflow's
    process-wide store and experiment, which it reads, are set for that call only (set for good, they would
    redirect later tests' fluent calls)."""
    import mlflow
    from mlflow.tracking import _tracking_service, fluent

    def load(uri: str, experiment_id: str, run_id: str, name: str) -> list[dict]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_tracking_service.utils, "_tracking_uri", uri)
            patch.setattr(fluent, "_active_experiment_id", experiment_id)
            return mlflow.load_table(name, run_ids=[run_id]).to_dict("records")

    return load
