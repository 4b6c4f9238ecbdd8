"""End-to-end: the real evaluate CLI on the tiny model, sampling, two datasets, nested under a parent run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_evaluate_two_datasets_with_sampling_nested_in_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("e2e-eval", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, run_name="training")
    datasets = f"datasets={{bundled: {{}}, mmlu_pro_health: {{path: {FIXTURES / 'mmlu_pro'}}}}}"
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.evaluate", "model=tiny", datasets, "limit=3", "num_samples=2",
            "temperature=0.7", "rollout.eval_max_new_tokens=6", "num_threads=1", f"logger.tracking_uri={uri}",
            f"parent_run_id={parent.info.run_id}", f"output_dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mmlu_pro_health letters chosen:" in result.stdout and "accuracy by option count" in result.stdout

    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert list(report["datasets"]) == ["bundled", "mmlu_pro_health"]
    mmlu = report["datasets"]["mmlu_pro_health"]
    assert mmlu["metrics"]["num_questions"] == 3 and mmlu["metrics"]["num_completions"] == 6
    assert set(mmlu["by_option_count"]) == {"4", "7", "10"} and list(mmlu["letters"]["true"])[-1] == "J"
    assert mmlu["origin"].endswith("mmlu_pro/test.jsonl") and mmlu["skipped_rows"] == []
    records = (tmp_path / "out" / "records_bundled.jsonl").read_text().splitlines()
    assert len(records) == 6 and {json.loads(r)["sample"] for r in records} == {0, 1}

    run = client.get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == experiment_id
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    for key in ("bundled/accuracy", "bundled/majority_accuracy", "mmlu_pro_health/format_rate", "mmlu_pro_health/accuracy_options_10"):
        assert key in run.data.metrics, key
    assert run.data.params["num_samples"] == "2" and run.data.params["model/name_or_path"] == "tiny"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"evaluation.json", "records"} <= artifacts


def test_a_checkpoint_folder_that_is_not_a_policy_is_one_line_and_exit_2(tmp_path):
    not_a_policy = tmp_path / "out" / "checkpoints"
    not_a_policy.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.evaluate", "model=tiny", f"checkpoint={not_a_policy}", "num_threads=1",
         f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'eval'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint: {not_a_policy} is not a saved policy (no config.json): pass the policy/ folder a"
        " training wrote"
    )
    assert "Traceback" not in result.stderr


def saved_study_policy(folder: Path) -> Path:
    """A tiny policy saved as training saves it, with a config of the study's format and prompt (no pre-fill)."""
    from hydra import compose, initialize_config_dir

    from medrlvr.config import register_configs, to_train_config
    from medrlvr.paths import config_dir
    from medrlvr.models.loading import load_causal_lm, load_tokenizer
    from medrlvr.policy_config import write_policy_config

    register_configs()
    overrides = ["model=tiny", "reward.format=study", "data.prompt.template=r1_zero", "data.prompt.response_prefix=''",
                 "data.prompt.one_shot=false", "rollout.eval_max_new_tokens=5"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose(config_name="config", overrides=overrides))
    tokenizer = load_tokenizer("tiny")
    load_causal_lm("tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_policy_config(folder, cfg)
    return folder


def test_evaluate_a_checkpoint_with_its_training_prompt_and_format(tmp_path):
    policy = saved_study_policy(tmp_path / "policy")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.evaluate", f"checkpoint={policy}", "datasets=[bundled]", "limit=2",
            "num_threads=1", "data.prompt.system_prompt=none", f"logger.tracking_uri={uri}",
            f"output_dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from {policy / 'medrlvr_config.yaml'}: " in result.stdout and "reward.format='study'" in result.stdout
    assert "data.prompt.system_prompt" not in result.stdout  # overridden on the command line

    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    params = MlflowClient(tracking_uri=uri).get_run(report["mlflow_run_id"]).data.params
    prompt = (params["reward/format"], params["prompt/template"], params["prompt/response_prefix"])
    assert prompt == ("study", "r1_zero", "")
    assert (params["prompt/system_prompt"], params["max_new_tokens"]) == ("none", "5")
    records = [json.loads(line) for line in (tmp_path / "out" / "records_bundled.jsonl").read_text().splitlines()]
    assert all(r["response_tokens"] <= 5 and not r["response"].startswith("<think>") for r in records)
