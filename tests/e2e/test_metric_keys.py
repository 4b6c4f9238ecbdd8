"""End-to-end: what tiny training runs log to MLflow is dense."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medrlvr.rewards.parsing import FORMAT_ERRORS

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parents[1] / "fixtures"
RUNS = {
    # every optional PPO family that does not skip updates: the OOD evaluation, the KL loss term, TIS
    "ppo": ("experiment=smoke", "trainer.eval_ood=true", "algo.kl_loss_coef=0.01", "algo.tis_cap=2.0"),
    "sft": (
        "experiment=smoke_sft", "data=medqa_5opt", f"data.path={FIXTURES / 'medqa_5opt'}", "data.batch_size=4",
        "trainer.eval_before=false", "trainer.eval_after=false",
    ),
    "filter": (
        "experiment=smoke", "algo.filter_equal_reward_groups=true", "trainer.max_steps=1",
        "trainer.eval_before=false", "trainer.eval_after=false",
    ),
}


def train(folder: Path, overrides: tuple[str, ...]) -> dict[str, list[int]]:
    """Run the training CLI; return each logged metric key with the steps it has values at."""
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.train", *overrides, f"logger.tracking_uri={uri}",
            "logger.experiment_name=keys", f"trainer.output_dir={folder / 'out'}", "trainer.num_threads=1",
            "trainer.save_model=false",
        ],
        cwd=folder, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("keys").experiment_id])
    run_id = run.info.run_id
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict[str, dict[str, list[int]]]:
    root = tmp_path_factory.mktemp("metric_keys")
    return {name: train(root / name, overrides) for name, overrides in RUNS.items()}


def test_every_training_key_has_a_value_at_every_iteration(logged):
    for name, keys in logged.items():
        steps = sorted({step for key, history in keys.items() if not key.startswith("eval/") for step in history})
        assert steps == list(range(1, steps[-1] + 1)), name
        sparse = {key: history for key, history in keys.items() if not key.startswith("eval/") and history != steps}
        assert not sparse, f"{name}: keys without a value at every iteration {steps}: {sparse}"
    evaluation = {key: history for key, history in logged["ppo"].items() if key.startswith("eval/")}
    assert all(history == ([0] if "/before" in key else [2]) for key, history in evaluation.items()), evaluation
    assert {f"format_error/{error}" for error in FORMAT_ERRORS} <= set(logged["ppo"])
    assert {f"eval/after_ood/chosen_{x}" for x in "ABCDEFGHIJ"} <= set(logged["ppo"])
