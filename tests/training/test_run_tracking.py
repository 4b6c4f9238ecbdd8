"""MLflow runs: the SQLite store is created once when several processes start on a fresh database, and a
training run stays RUNNING until its evaluation after training has been logged."""

import multiprocessing

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError
from medrlvr.training.preflight import create_sqlite_store
from medrlvr.training.run_tracking import ResumableMLFlowLogger


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


class _OneParameter(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight - batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_run_stays_running_after_fit_until_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)  # this process logs, whatever an earlier Trainer left
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = ResumableMLFlowLogger(experiment_name="e", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    trainer = L.Trainer(
        max_steps=2, logger=logger, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_OneParameter(), torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2))
    client = MlflowClient(uri)
    assert client.get_run(logger.run_id).info.status == "RUNNING"  # the evaluation after training comes next
    logger.log_metrics({"eval/bundled_validation/accuracy": 0.5}, step=2)
    logger.finish()
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["eval/bundled_validation/accuracy"] == 0.5


def test_runs_with_the_same_seed_get_different_names():
    import random
    import re

    from medrlvr.training.builders import fresh_run_name

    names = []
    for _ in range(2):
        random.seed(42)  # what seed_everything does before the run is opened
        names.append(fresh_run_name("ppo"))
    assert names[0] != names[1] and all(re.fullmatch(r"ppo-\d{8}-\d{6}-[0-9a-f]{4}", n) for n in names)
