"""Real multi-process runs on the CPU (gloo), tiny model, one thread per process:

- DeepSpeed's own engine steps the project's actor+critic parameter groups with the generated ZeRO-2 and ZeRO-3
  configs, in 1 and 2 processes, and ZeRO-2 with the optimizer state offloaded or in bf16
  (``deepspeed_engine_steps.py``);
- PPO iterations through Lightning's DDP and DeepSpeed strategies under ``torchrun`` (``strategy_run.py``);
- the training CLI with ``trainer=deepspeed_zero3`` on 2 processes under ``torchrun``
  (``train_deepspeed_cpu.py``) and with ``trainer=ddp`` on 2 processes started by Lightning itself.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel)


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory) -> dict[tuple[int, int], dict]:
    folder = tmp_path_factory.mktemp("engine")
    results = {}
    for processes in (1, 2):
        for stage in (2, 3):
            out = folder / f"{processes}_{stage}.json"
            run([*TORCHRUN, str(processes), str(HERE / "deepspeed_engine_steps.py"), str(out), str(stage)], folder)
            results[processes, stage] = json.loads(out.read_text())
    out = folder / "offload.json"
    offload = ["trainer.deepspeed.offload_optimizer=true"]
    run([*TORCHRUN, "1", str(HERE / "deepspeed_engine_steps.py"), str(out), "2", *offload], folder)
    results["offload"] = json.loads(out.read_text())
    out = folder / "bf16.json"
    run([*TORCHRUN, "1", str(HERE / "deepspeed_engine_steps.py"), str(out), "2", "trainer.precision=bf16-mixed"], folder)
    results["bf16"] = json.loads(out.read_text())
    return results


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_engine_steps_the_actor_critic_groups(engine_runs, processes, stage):
    result = engine_runs[processes, stage]
    assert (result["world_size"], result["stage"]) == (processes, stage)
    assert result["optimizer_group_lrs"] == [1e-3, 1e-3]  # actor group, critic group
    assert result["reference_kl_at_start"] == 0.0
    ranks = result["ranks"]
    for rank in ranks:
        assert rank["losses"][-1] < rank["losses"][0], rank["losses"]  # the PPO loss moves down
        assert not close(rank["end"]["trainable"], rank["start"]["trainable"])
        assert rank["end"]["reference"] == rank["start"]["reference"]  # the frozen reference never changes
        assert close(rank["end"]["trainable"], ranks[0]["end"]["trainable"], 1e-12)  # processes agree
    assert all(math.isfinite(n) and n > 0 for n in result["grad_norms"])


@pytest.mark.parametrize("processes", [1, 2])
def test_zero2_and_zero3_take_the_same_steps(engine_runs, processes):
    zero2, zero3 = engine_runs[processes, 2]["ranks"][0], engine_runs[processes, 3]["ranks"][0]
    assert close(zero2["end"]["trainable"], zero3["end"]["trainable"])
    assert all(close(a, b, 1e-5) for a, b in zip(zero2["losses"], zero3["losses"]))


def test_optimizer_offload_to_cpu_takes_the_same_steps(engine_runs):
    offload, plain = engine_runs["offload"], engine_runs[1, 2]
    assert offload["offload_optimizer"] and not plain["offload_optimizer"]
    assert close(offload["ranks"][0]["end"]["trainable"], plain["ranks"][0]["end"]["trainable"], 1e-9)


def test_bf16_takes_nearly_the_same_steps(engine_runs):
    bf16, fp32 = engine_runs["bf16"], engine_runs[1, 2]
    assert bf16["bf16"] and not fp32["bf16"]
    losses = bf16["ranks"][0]["losses"]
    assert losses[-1] < losses[0]
    assert close(bf16["ranks"][0]["end"]["trainable"], fp32["ranks"][0]["end"]["trainable"], 1e-3)
    assert not close(bf16["ranks"][0]["end"]["trainable"], fp32["ranks"][0]["end"]["trainable"], 1e-6)


@pytest.fixture(scope="module")
def strategy_runs(tmp_path_factory, tiny_folder) -> dict[str, list[dict]]:
    folder, _ = tiny_folder
    results = {}
    for option in ("ddp", "deepspeed_zero2", "deepspeed_zero3"):
        out = tmp_path_factory.mktemp(option)
        # 4 completions per process and minibatch, in 2 micro-batches of 2: gradients accumulated over 2 passes
        overrides = ["trainer.max_steps=2", f"model.name_or_path={folder}", "algo.micro_batch_size=2"]
        run([*TORCHRUN, "2", str(HERE / "strategy_run.py"), str(out), option, *overrides], out)
        results[option] = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return results


@pytest.mark.parametrize("option", ["ddp", "deepspeed_zero2", "deepspeed_zero3"])
def test_lightning_strategy_runs_ppo_on_two_processes(strategy_runs, tiny_folder, option):
    ranks = strategy_runs[option]
    _, loaded_sum = tiny_folder
    first, second = ranks
    assert first["strategy"] == ("DDPStrategy" if option == "ddp" else "AccumulatingDeepSpeedStrategy")
    if option != "ddp":  # DeepSpeed knows the accumulation and stepped once per minibatch: 2 iterations x 2 epochs
        config = first["deepspeed_config"]
        assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (2, 2)
        assert first["deepspeed_optimizer_steps"] == 4
    assert first["world_size"] == 2
    # each process generated from its own prompts
    assert not set(sum(first["prompts"], [])) & set(sum(second["prompts"], []))
    # built from the checkpoint (partitioned at construction under ZeRO-3) with the loaded weights
    start = first["start"]
    assert close(start["actor/sum"], loaded_sum, 1e-9)
    # reference and critic trunk are copies of the actor; the value head starts at zero
    assert start["reference/sum"] == start["actor/sum"] == start["critic/sum"]
    assert first["metrics"][0]["kl/mean_per_token"] == 0.0  # actor and reference start equal
    # trained: actor and critic moved the same way on both processes, the reference did not move
    assert first["end"] == second["end"]
    assert first["end"]["actor/sum"] != first["start"]["actor/sum"]
    assert first["end"]["critic/abs"] != first["start"]["critic/abs"]
    assert first["end"]["reference/sum"] == first["start"]["reference/sum"]
    assert first["metrics"] == second["metrics"]  # combined over processes before logging
    assert first["lrs"] == first["configured_lrs"]  # the actor group and the critic group


def test_ddp_zero2_and_zero3_agree(strategy_runs):
    runs = [strategy_runs[option][0] for option in ("ddp", "deepspeed_zero2", "deepspeed_zero3")]
    start, end = runs[0]["start"], runs[0]["end"]
    for key in end:
        # the same update within 1e-4 of how far the weights moved: with every reward -1 the whitened advantages
        # are the critic's rounding noise, and Adam's first steps turn a near-zero gradient element's sign into a
        # full lr step, so a few elements may differ by 2 x lr; a wrong accumulation differs by far more
        moved = abs(end[key] - start[key])
        assert all(abs(run["end"][key] - end[key]) <= 1e-4 * moved + 1e-9 * abs(end[key]) for run in runs), key


def test_zero2_shards_optimizer_state_of_trainable_parameters_only(strategy_runs):
    ddp, zero2 = strategy_runs["ddp"][0], strategy_runs["deepspeed_zero2"][0]
    # DDP's AdamW holds every trainable parameter (actor + critic, no reference); ZeRO-2 half of them per process
    assert abs(zero2["optimizer_params"] * 2 - ddp["optimizer_params"]) <= 64


def test_training_cli_with_zero3_on_two_processes(tmp_path: Path, tiny_folder, strategy_runs):
    """The whole CLI under torchrun: only the first process opens the MLflow store, and the policy saved at the
    end is gathered from the partitions: it equals the actor the ZeRO-3 strategy run ended with."""
    folder, _ = tiny_folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(
        [
            *TORCHRUN, "2", str(HERE / "train_deepspeed_cpu.py"), "experiment=smoke", "trainer=deepspeed_zero3",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.num_threads=1",
            "trainer.max_steps=2", "algo.micro_batch_size=2", "model.gradient_checkpointing=false",
            f"model.name_or_path={folder}",
            f"logger.tracking_uri={uri}", "logger.experiment_name=zero3", f"trainer.output_dir={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        tmp_path,
    )
    from transformers import AutoModelForCausalLM

    client = MlflowClient(uri)
    (run_info,) = client.search_runs([client.get_experiment_by_name("zero3").experiment_id])
    assert run_info.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_info.info.run_id, "reward/mean")) == [1, 2]
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "policy")
    saved = float(sum(p.double().sum() for p in policy.parameters()))
    assert close(saved, strategy_runs["deepspeed_zero3"][0]["end"]["actor/sum"], 1e-9)


def test_training_cli_on_two_ddp_processes(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(
        [
            sys.executable, "-m", "medrlvr.train", "experiment=smoke", "trainer=ddp", "trainer.accelerator=cpu",
            "trainer.devices=2", "trainer.precision=32-true", "trainer.num_threads=1", "trainer.max_steps=2",
            "model.gradient_checkpointing=false", f"logger.tracking_uri={uri}", "logger.experiment_name=ddp",
            f"trainer.output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        tmp_path,
    )
    client = MlflowClient(uri)
    (run_info,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert run_info.info.status == "FINISHED"
    history = client.get_metric_history(run_info.info.run_id, "reward/mean")
    assert sorted(m.step for m in history) == [1, 2]  # logged once per iteration, by one process
    assert "eval/bundled_validation/accuracy" in run_info.data.metrics
    assert (tmp_path / "out" / "policy" / "config.json").is_file()
    assert (tmp_path / "out" / "checkpoints" / "iter_00002" / "manifest.json").is_file()
