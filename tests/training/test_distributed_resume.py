"""Killed multi-process runs resume to the uninterrupted result, on the CPU (gloo), tiny model, fp32, one thread
per process, 3 iterations with a checkpoint after each:

- ``trainer=deepspeed_zero3`` on 2 processes under ``torchrun`` (``train_deepspeed_cpu.py``) and ``trainer=ddp``
  on 2 processes started by Lightning itself: SIGKILLed (the launcher and every process it started) once
  iteration 2's checkpoint exists, then resumed with ``resume=auto``;
- ``trainer=deepspeed_zero2``: the uninterrupted reference run, resumed from its own iteration-2 checkpoint with
  ``resume=<path>``, and its newest checkpoint damaged.

Under DeepSpeed the checkpoints are the engine's own sharded ones. The reference is one uninterrupted ZeRO-2
run: DDP, ZeRO-2 and ZeRO-3 take the same steps up to fp32 rounding
(``test_distributed_runs.py::test_ddp_zero2_and_zero3_agree``).
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from medrlvr.training.checkpointing import latest_checkpoint, resolve_resume

pytest.importorskip("deepspeed")
psutil = pytest.importorskip("psutil")  # a dependency of deepspeed
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
LAUNCH = {
    "deepspeed_zero2": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(HERE / "train_deepspeed_cpu.py")],
    "ddp": [sys.executable, "-m", "medrlvr.train"],
}
LAUNCH["deepspeed_zero3"] = LAUNCH["deepspeed_zero2"]
SETTINGS = (
    "experiment=smoke", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
    "trainer.num_threads=1", "model.gradient_checkpointing=false", "trainer.max_steps=3",
    "trainer.checkpoint_every=1", "trainer.eval_before=false", "trainer.eval_after=false",
    "algo.lr_scheduler=cosine_with_min_lr",  # the learning rate changes at every step: a resume must continue it
)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# DDP, ZeRO-2 and ZeRO-3 end 3 iterations within 4e-6 of each other; the weights move by about 1e-3
ATOL = 3e-5


def command(option: str, folder: Path, model: Path, *overrides: str) -> list[str]:
    return [
        *LAUNCH[option], f"trainer={option}", *SETTINGS, f"model.name_or_path={model}",
        f"logger.tracking_uri=sqlite:///{folder / 'mlflow.db'}", "logger.experiment_name=resume",
        f"trainer.output_dir={folder / 'out'}", f"hydra.run.dir={folder / 'hydra'}", *overrides,
    ]


def run(cmd: list[str], folder: Path) -> str:
    result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=600, env=ENV)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def run_and_kill_after(cmd: list[str], folder: Path, marker: Path) -> None:
    """Start ``cmd`` and, once ``marker`` exists, SIGKILL it and every process it started (torchrun puts each
    worker in a session of its own, so killing the process group would not reach them)."""
    with (folder / "killed.log").open("w") as log:
        process = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, (folder / "killed.log").read_text()[-6000:]
        assert time.monotonic() < deadline, f"timed out waiting for {marker}"
        time.sleep(0.05)
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        member.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    psutil.wait_procs(tree[1:], timeout=30)


def policy(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def only_run(folder: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    (run_info,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    run_id = run_info.info.run_id
    steps = {key: [m.step for m in client.get_metric_history(run_id, key)] for key in run_info.data.metrics}
    return run_info, steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_folder) -> Path:
    """An uninterrupted ZeRO-2 run's folder."""
    folder = tmp_path_factory.mktemp("reference")
    run(command("deepspeed_zero2", folder, tiny_folder[0]), folder)
    return folder


def assert_finished_like_the_reference(folder: Path, reference: Path, tiny_folder: tuple[Path, float]) -> None:
    """The final policy equals the reference's within fp32 noise; one MLflow run, FINISHED, each metric logged
    once per iteration."""
    expected, start = policy(reference / "out" / "policy"), load_file(str(tiny_folder[0] / "model.safetensors"))
    assert largest_difference(expected, start) > 10 * ATOL  # a resume that lost an update would show
    assert largest_difference(policy(folder / "out" / "policy"), expected) < ATOL
    run_info, steps = only_run(folder)
    assert run_info.info.status == "FINISHED"
    assert steps["reward/mean"] == steps["loss/policy_loss"] == [1, 2, 3]
    assert all(len(set(logged)) == len(logged) for logged in steps.values()), steps
    assert steps.keys() == only_run(reference)[1].keys()


@pytest.mark.parametrize("option", ["deepspeed_zero3", "ddp"])
def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, tiny_folder, reference, option):
    checkpoints = tmp_path / "out" / "checkpoints"
    run_and_kill_after(command(option, tmp_path, tiny_folder[0]), tmp_path, checkpoints / "iter_00002")
    assert not (checkpoints / "iter_00003").exists()
    output = run(command(option, tmp_path, tiny_folder[0], "resume=auto"), tmp_path)
    assert f"resuming from {checkpoints / 'iter_00002'}" in output
    assert "iter 3/3" in output and "iter 1/3" not in output and "iter 2/3" not in output
    assert_finished_like_the_reference(tmp_path, reference, tiny_folder)  # the resumed run continued the killed one


def test_zero2_resumes_from_a_checkpoint_path(tmp_path, tiny_folder, reference):
    """The reference's folder with its last checkpoint and policy removed, resumed with ``resume=<path>`` of
    iteration 2's checkpoint (the last iteration is already logged: nothing is logged twice)."""
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "out" / "policy")
    shutil.rmtree(tmp_path / "out" / "checkpoints" / "iter_00003")
    checkpoint = tmp_path / "out" / "checkpoints" / "iter_00002"
    output = run(command("deepspeed_zero2", tmp_path, tiny_folder[0], f"resume={checkpoint}"), tmp_path)
    assert f"resuming from {checkpoint}" in output and "iter 3/3" in output and "iter 2/3" not in output
    assert_finished_like_the_reference(tmp_path, reference, tiny_folder)


def test_a_damaged_deepspeed_shard_falls_back_to_the_previous_checkpoint(tmp_path, reference, caplog):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(reference / "out" / "checkpoints", checkpoints)
    assert latest_checkpoint(checkpoints).iteration == 3
    shard = checkpoints / "iter_00003" / "deepspeed" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    shard.write_bytes(shard.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        checkpoint = resolve_resume(str(checkpoints), tmp_path)
    assert checkpoint.iteration == 2 and checkpoint.state["layout"]["zero_stage"] == 2
    assert f"skipping damaged checkpoint: {shard}: 1000 bytes" in caplog.text
