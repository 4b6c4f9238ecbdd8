"""End-to-end: what a tiny training run records about itself, read back through the MLflow client: its completion
tables across iterations and steps, its description, its datasets as inputs and, on request, system metrics."""

import json

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.registry import load_heldout_split, load_split
from medrlvr.training.run import train

pytestmark = pytest.mark.slow
register_configs()
COMMAND = "python -m medrlvr.train experiment=smoke trainer.eval_every=1"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One two-iteration run of the tiny model evaluated at every step, with system metrics sampled each second."""
    folder = tmp_path_factory.mktemp("record")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    overrides = [
        "experiment=smoke", "trainer.eval_every=1", "trainer.log_system_metrics=true", "trainer.num_threads=1",
        "trainer.save_model=false", f"logger.tracking_uri={uri}", "logger.experiment_name=record",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            composed = compose(config_name="config", overrides=overrides)
        train(to_train_config(composed), folder / "out", OmegaConf.to_yaml(composed), command=COMMAND)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("record").experiment_id])
    return uri, client, run


def smoke_data():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=["experiment=smoke"])).data


def test_completions_are_one_table_across_iterations_and_evaluations_one_across_steps(logged, load_mlflow_table):
    uri, _, run = logged
    rows = load_mlflow_table(uri, run.info.experiment_id, run.info.run_id, "completions.json")
    assert sorted({row["iteration"] for row in rows}) == [1, 2]  # experiment=smoke logs samples every iteration
    assert len(rows) == 2 * 2 * 2  # 2 prompts x 2 samples per iteration (under logger.samples_per_table=16)
    assert all(row["question"] and row["options"].startswith("A. ") and row["stage"][0] in "123456" for row in rows)
    evaluated = load_mlflow_table(uri, run.info.experiment_id, run.info.run_id, "eval/bundled_validation.json")
    assert [row["step"] for row in evaluated] == [0] * 4 + [1] * 4 + [2] * 4  # data.eval_size=4 at each step
    assert all(row["question"] and row["stage"][0] in "123456" for row in evaluated)
    assert {row["id"] for row in evaluated} == {e.id for e in load_heldout_split(smoke_data(), "validation")[:4]}


def test_the_run_describes_itself(logged):
    _, _, run = logged
    note = run.data.tags["mlflow.note.content"]
    assert "**model** `tiny`" in note and "**algorithm** ppo" in note and "**reward** default (format strict)" in note
    assert "evaluates bundled_validation" in note and f"**command** `{COMMAND}`" in note


def test_the_datasets_are_the_runs_inputs(logged):
    _, _, run = logged
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"bundled_train", "bundled_validation"}
    contexts = {name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for name, i in inputs.items()}
    assert contexts == {"bundled_train": "training", "bundled_validation": "eval"}
    data = smoke_data()
    for name, split, rows in (("bundled_train", "train", len(load_split(data, "train"))), ("bundled_validation", "validation", 4)):
        dataset = inputs[name].dataset
        assert dataset.source_type == "local" and json.loads(dataset.source)["uri"].endswith(f"bundled/{split}.jsonl")
        assert json.loads(dataset.profile)["num_rows"] == rows and len(dataset.digest) == 8


def test_system_metrics_are_logged_on_request(logged):
    _, client, run = logged
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    assert len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")) >= 1
