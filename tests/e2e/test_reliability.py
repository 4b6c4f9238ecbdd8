"""Real processes: SIGKILL then resume equals an uninterrupted run (and so does a resumed SFT run); NaN updates are
skipped or stop the run; Ctrl-C and SIGTERM save a checkpoint and mark the run KILLED."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

INJECT = str(Path(__file__).with_name("inject_faults.py"))
QUICK = ("trainer.eval_before=false", "trainer.eval_after=false", "trainer.save_model=false")
# Wall-clock timings differ between runs; everything else must be identical.
UNTIMED = ("time/", "perf/")


def command(folder: Path, *overrides: str, script: list[str] | None = None, experiment: str = "smoke") -> list[str]:
    return [
        sys.executable, *(script or ["-m", "medrlvr.train"]), f"experiment={experiment}", "trainer.num_threads=1",
        f"logger.tracking_uri=sqlite:///{folder / 'mlflow.db'}", "logger.experiment_name=rel",
        f"trainer.output_dir={folder / 'out'}", f"hydra.run.dir={folder / 'hydra'}", *overrides,
    ]


def run(
    folder: Path, *overrides: str, script: list[str] | None = None, experiment: str = "smoke"
) -> subprocess.CompletedProcess:
    folder.mkdir(exist_ok=True)
    return subprocess.run(command(folder, *overrides, script=script, experiment=experiment), cwd=folder,
                          capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def only_run(folder: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rel").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def history(client: MlflowClient, run) -> dict[str, list[tuple[int, float]]]:
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics if not key.startswith(UNTIMED)}


def start_and_wait_for(
    folder: Path, marker: Path, *overrides: str, script: list[str] | None = None
) -> subprocess.Popen:
    folder.mkdir(exist_ok=True)
    log = (folder / "log.txt").open("w")
    process = subprocess.Popen(command(folder, *overrides, script=script), cwd=folder, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, (folder / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out waiting for " + str(marker)
        time.sleep(0.05)
    return process


def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    # a decaying learning rate: its schedule must resume where it stopped too
    settings = ("trainer.max_steps=4", "trainer.checkpoint_every=2", "algo.lr_scheduler=cosine_with_min_lr", *QUICK)
    straight = run(tmp_path / "straight", *settings)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    process = start_and_wait_for(killed, killed / "out" / "checkpoints" / "iter_00002", *settings)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed / "out" / "checkpoints" / "iter_00004").exists()
    resumed = run(killed, *settings, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "resuming from" in output and "iter 3/4" in output and "iter 1/4" not in output

    final = load_file(str(killed / "out" / "checkpoints" / "iter_00004" / "trainable.safetensors"))
    expected = load_file(str(tmp_path / "straight" / "out" / "checkpoints" / "iter_00004" / "trainable.safetensors"))
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[name], expected[name]) for name in expected), "weights differ after resume"

    client, run_a = only_run(tmp_path / "straight")
    client_b, run_b = only_run(killed)  # one run: the resumed process continued it
    assert run_b.info.status == "FINISHED"
    metrics_a, metrics_b = history(client, run_a), history(client_b, run_b)
    assert metrics_a.keys() == metrics_b.keys() and {"loss/policy_loss", "lr/actor", "lr/critic"} <= metrics_a.keys()
    assert len({value for _, value in metrics_a["lr/actor"]}) == 4
    for key, values in metrics_a.items():
        assert sorted(metrics_b[key]) == sorted(values), key  # same steps, same values, nothing twice
    assert [step for step, _ in metrics_b["reward/mean"]] == [1, 2, 3, 4]


def test_sft_resumed_from_its_checkpoint_matches_the_uninterrupted_run(tmp_path):
    settings = ("trainer.checkpoint_every=2", *QUICK)
    straight = run(tmp_path / "straight", "trainer.max_steps=4", *settings, experiment="smoke_sft")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run(tmp_path / "resumed", "trainer.max_steps=2", *settings, experiment="smoke_sft")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run(tmp_path / "resumed", "trainer.max_steps=4", *settings, "resume=auto", experiment="smoke_sft")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "resuming from" in output and "iter 3/4" in output and "iter 1/4" not in output

    folders = [tmp_path / name / "out" / "checkpoints" / "iter_00004" for name in ("resumed", "straight")]
    final, expected = (load_file(str(folder / "trainable.safetensors")) for folder in folders)
    assert final.keys() == expected.keys() and final
    assert all(torch.equal(final[name], expected[name]) for name in expected), "weights differ after resume"
    optimizer, expected_optimizer = (torch.load(folder / "optimizer.pt", weights_only=True) for folder in folders)
    for state, expected_state in zip(optimizer["state"].values(), expected_optimizer["state"].values(), strict=True):
        assert all(torch.equal(state[key], expected_state[key]) for key in expected_state)

    client, run_a = only_run(tmp_path / "straight")
    client_b, run_b = only_run(tmp_path / "resumed")
    metrics_a, metrics_b = history(client, run_a), history(client_b, run_b)
    assert {"loss/sft", "numerics/skipped_update"} <= metrics_a.keys()
    for key in ("loss/sft", "loss/grad_norm", "numerics/skipped_update", "numerics/bad_iterations"):
        assert sorted(metrics_b[key]) == sorted(metrics_a[key]), key  # same steps, same values, nothing twice


def test_nan_updates_are_skipped_and_counted_and_repeated_ones_fail_the_run(tmp_path):
    result = run(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every=1", "trainer.max_bad_updates=2",
                 "algo.ppo_epochs=1", *QUICK, script=[INJECT, "nan_reward:2,4,5"])
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "iteration 2: non-finite advantages, returns; update skipped" in output
    assert "error: 2 consecutive iterations (up to 5) had non-finite advantages, returns" in result.stderr
    assert "Traceback" not in result.stderr
    client, run_info = only_run(tmp_path)
    metrics = history(client, run_info)
    assert sorted(metrics["numerics/skipped_update"]) == [(1, 0.0), (2, 1.0), (3, 0.0), (4, 1.0)]
    assert sorted(metrics["numerics/bad_iterations"]) == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0)]
    assert run_info.info.status == "FAILED"
    assert run_info.data.tags["error"].startswith("NumericsError: 2 consecutive iterations")
    assert "NumericsError" in run_info.data.tags["error_traceback"]
    # Iteration 5 wrote nothing; one AdamW step per iteration (4 completions, minibatch 4), none at 2 and 4.
    checkpoints = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["iter_00003", "iter_00004"]
    optimizer = torch.load(checkpoints / "iter_00004" / "optimizer.pt", weights_only=True)
    assert float(optimizer["state"][0]["step"]) == 2.0
    weights = load_file(str(checkpoints / "iter_00004" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run_killed(tmp_path):
    process = start_and_wait_for(tmp_path, tmp_path / "out" / "checkpoints" / "iter_00001",
                                 "trainer.max_steps=6", "trainer.checkpoint_every=1", *QUICK)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    log = (tmp_path / "log.txt").read_text()
    assert "received SIGINT: stopping after this iteration" in log
    stopped = re.search(r"interrupted: interrupted after iteration (\d+)", log)
    assert stopped is not None, log[-2000:]
    saved = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    # the signal lands during iteration 2 or just before it starts: either way that iteration's checkpoint is last
    assert 1 <= int(stopped.group(1)) < 6 and saved[-1] == f"iter_{int(stopped.group(1)):05d}"
    _, run_info = only_run(tmp_path)
    assert run_info.info.status == "KILLED"


def test_sigterm_saves_a_checkpoint_exits_143_and_resume_continues_the_run(tmp_path):
    """Also: the resume changes a setting that may change (recorded on the run); a later resume that changes
    the data is refused before the run is touched."""
    settings = ("trainer.max_steps=3", "trainer.checkpoint_every=1", *QUICK)
    process = start_and_wait_for(tmp_path, tmp_path / "out" / "checkpoints" / "iter_00001", *settings)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    log = (tmp_path / "log.txt").read_text()
    assert "received SIGTERM: stopping after this iteration" in log
    stopped = re.search(r"interrupted: interrupted after iteration (\d+) by SIGTERM; checkpoint (\S+)", log)
    assert stopped is not None, log[-2000:]
    assert Path(stopped.group(2)).name == f"iter_{int(stopped.group(1)):05d}" and Path(stopped.group(2)).is_dir()
    client, killed = only_run(tmp_path)
    assert killed.info.status == "KILLED" and killed.data.tags["stop_signal"] == "SIGTERM"

    resumed = run(tmp_path, *settings, "algo.kl_coef=0.05", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, finished = only_run(tmp_path)  # the same run, continued
    assert finished.info.run_id == killed.info.run_id and finished.info.status == "FINISHED"
    assert [step for step, _ in history(client, finished)["reward/mean"]] == [1, 2, 3]
    assert finished.data.tags["resume/overrides"] == "algo.kl_coef: 0.01 -> 0.05"
    artifacts = {a.path for a in client.list_artifacts(finished.info.run_id)}
    assert {"config.yaml", f"config_resumed_at_iter_{int(stopped.group(1)):05d}.yaml"} <= artifacts

    refused = run(tmp_path, *settings, "algo.kl_coef=0.05", "data.batch_size=4", "resume=auto")
    assert refused.returncode == 2
    state = tmp_path / "out" / "checkpoints" / "iter_00003" / "state.json"
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"error: resume: settings differ from the checkpoint's ({state}): data.batch_size: 2 -> 4;"
    )
    _, unchanged = only_run(tmp_path)
    assert unchanged.info.status == "FINISHED"  # not reopened


def test_a_busy_folder_refuses_a_second_run_and_sigterm_during_evaluation_leaves_the_run_killed(tmp_path):
    marker = tmp_path / "evaluating"
    process = start_and_wait_for(tmp_path, marker, "trainer.max_steps=2", script=[INJECT, f"slow_eval:{marker}"])
    second = run(tmp_path, "trainer.max_steps=2")
    assert second.returncode == 2, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        f"error: trainer.output_dir: {tmp_path / 'out'} is in use by another training (process {process.pid} on "
    )
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert "interrupted: received SIGTERM" in (tmp_path / "log.txt").read_text()
    _, run_info = only_run(tmp_path)
    assert run_info.info.status == "KILLED" and run_info.data.tags["stop_signal"] == "SIGTERM"
    assert not (tmp_path / "out" / "checkpoints").exists()

