"""End-to-end: the real CLI trains the tiny model for 2 PPO iterations (or 2 SFT steps) and records the run in MLflow."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from medrlvr.mlflow_ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING

pytestmark = pytest.mark.slow


def run_train(tmp_path: Path, *overrides: str, experiment: str = "smoke") -> tuple[subprocess.CompletedProcess, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.train", f"experiment={experiment}",
            f"logger.tracking_uri={uri}", "logger.experiment_name=e2e",
            f"trainer.output_dir={tmp_path / 'out'}", "trainer.num_threads=1", *overrides,
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return result, uri


def test_two_ppo_iterations_are_recorded_in_mlflow(tmp_path):
    result, uri = run_train(tmp_path, "reward=length_penalty")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "iter 2/2" in output and "ETA" in output and "eval bundled_validation at step 2: accuracy" in output

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING  # MLflow's experiment kind: model training
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["algo/kl_coef"] == "0.01" and params["reward/name"] == "length_penalty"
    assert params["model/name_or_path"] == "tiny" and params["trainer/max_steps"] == "2"

    history = client.get_metric_history(run.info.run_id, "reward/mean")
    assert [m.step for m in history] == [1, 2]
    for key in ("kl/mean_per_sequence", "loss/policy_loss", "loss/value_loss", "loss/entropy", "time/generate_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2, key
    for key in ("eval/bundled_validation/accuracy", "eval/bundled_validation/format_rate"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 2], key  # base, trained

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "completions.json", "eval", "figures"} <= artifacts and "policy" not in artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    names = ("stage_fractions", "training_curves", "answer_letters_bundled_validation")
    assert figures == {f"figures/{name}.png" for name in names}
    (output,) = run.outputs.model_outputs  # the policy as an MLflow model (whole: the tiny model has no LoRA)
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id) == ("policy", run.info.run_id)
    config_text = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml", tracking_uri=uri)).read_text()
    assert "length_penalty" in config_text
    assert (tmp_path / "out" / "policy" / "config.json").is_file()
    assert (tmp_path / "out" / "policy" / "tokenizer.json").is_file()


def _first_iteration(tmp_path: Path, name: str, seed: int) -> dict[str, float]:
    folder = tmp_path / name
    folder.mkdir()
    # LoRA on the top layer with a shared critic: the CPU default's code path on the tiny model.
    result, uri = run_train(folder, "trainer.max_steps=1", f"seed={seed}", "trainer.eval_before=false",
                            "trainer.eval_after=false", "trainer.save_model=false", "model.lora_rank=4",
                            "model.lora_top_layers=1", "model.critic=shared")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])[0]
    keys = ("reward/mean", "response/tokens_mean", "loss/policy_loss", "loss/value_loss", "kl/mean_per_token")
    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/completions.json")
    assert {row[table["columns"].index("iteration")] for row in table["data"]} == {1}
    responses = [row[table["columns"].index("response")] for row in table["data"]]
    return {"responses": responses, **{k: run.data.metrics[k] for k in keys}}


def test_same_seed_gives_the_same_first_iteration(tmp_path):
    first = _first_iteration(tmp_path, "a", seed=3)
    assert _first_iteration(tmp_path, "b", seed=3) == first
    assert _first_iteration(tmp_path, "c", seed=4)["responses"] != first["responses"]


def test_sft_two_steps_on_a_repeated_batch_lower_the_loss(tmp_path):
    fixtures = Path(__file__).parents[1] / "fixtures" / "medqa_5opt"
    result, uri = run_train(
        tmp_path, "data=medqa_5opt", f"data.path={fixtures}", "data.batch_size=4", "data.eval_size=1",
        experiment="smoke_sft",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iter 2/2 | loss" in result.stdout + result.stderr

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["algo"] == "sft"
    assert run.data.params["algo/name"] == "sft" and run.data.params["algo/lr"] == "0.001"
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss/sft"), key=lambda m: m.step)]
    assert len(losses) == 2 and losses[1] < losses[0]  # the training split is 4 questions: both steps see all of them
    history = client.get_metric_history(run.info.run_id, "eval/medqa_dev/accuracy")  # data=medqa_5opt's dev split
    assert sorted(m.step for m in history) == [0, 2]  # base, trained
    assert (tmp_path / "out" / "policy" / "config.json").is_file()
