"""The memory plan's arithmetic on hand-checked cases (no timing): DeepSpeed's estimators, logits, vLLM's share."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.models.configs import load_model_config
from medrlvr.plan.__main__ import main
from medrlvr.plan.memory import GIB, Counts, Workload, memory_plan, model_state_items, update_items
from medrlvr.plan.sizes import Skeleton
from medrlvr.training.builders import lora_settings

deepspeed = pytest.importorskip("deepspeed")
QWEN_PARAMS = 3_085_938_688  # Qwen2.5-3B with tied embeddings


def study(*overrides: str):
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return to_train_config(compose("config", ["experiment=med_rlvr", "trainer.devices=8", *overrides]))


@pytest.fixture(scope="module")
def qwen() -> Skeleton:
    config, source = load_model_config("Qwen/Qwen2.5-3B")
    assert "Qwen/Qwen2.5-3B" in source
    return Skeleton(config, lora_settings(study().model), torch.bfloat16)


def test_qwen_skeleton_counts(qwen):
    sizes = qwen.sizes()
    assert sizes.lm_params == sizes.trunk_params == QWEN_PARAMS  # tied: the output layer has no weights of its own
    assert sizes.largest_layer_params == 151936 * 2048
    assert sizes.kv_bytes_per_token == 2 * 36 * 2 * 128 * 2  # keys and values, 36 layers, 2 KV heads of 128, bf16


def test_zero2_on_8_gpus_is_deepspeeds_estimate(qwen):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cfg = study()
    sizes = qwen.sizes()
    counts = Counts.of(sizes, cfg)
    assert counts.actor_trainable == QWEN_PARAMS and counts.critic_trainable == QWEN_PARAMS + 2049
    items = {i.name: i.bytes for i in model_state_items(cfg, sizes, counts)[0]}
    _, actor = estimate_zero2_model_states_mem_needs(QWEN_PARAMS, 8, 1, cpu_offload=False)
    _, critic = estimate_zero2_model_states_mem_needs(QWEN_PARAMS + 2049, 8, 1, cpu_offload=False)
    trainable = items["actor weights"] + items["critic weights"] + items["gradients"] + items["optimizer states"]
    assert trainable == actor + critic
    assert items["actor weights"] == 2 * QWEN_PARAMS  # 16-bit, whole on every GPU
    assert items["gradients"] == 6 * QWEN_PARAMS // 8 + 6 * (QWEN_PARAMS + 2049) // 8
    assert items["reference weights"] == 2 * QWEN_PARAMS
    assert items["ZeRO gradient buckets"] == 2 * 200_000_000 * 2  # two bf16 buckets with overlap_comm


def test_zero3_partitions_weights_and_offload_moves_states_to_the_host(qwen):
    cfg = study("trainer=deepspeed_zero3", "trainer.deepspeed.offload_optimizer=true")
    sizes = qwen.sizes()
    items, host = model_state_items(cfg, sizes, Counts.of(sizes, cfg))
    items = {i.name: i.bytes for i in items}
    assert items["reference weights"] == 2 * QWEN_PARAMS // 8
    assert items["gradients"] == items["optimizer states"] == 0
    assert items["ZeRO-3 gathered layer"] == 4 * 151936 * 2048
    assert host > 0


def test_logits_of_one_chunk(qwen):
    cfg = study()
    work = Workload(rows=128, prompt=512, response=1024)
    logits = {i.name: i.bytes for i in update_items(cfg, qwen, qwen.sizes(), work, micro=4)}["logits"]
    assert logits == 1024 * 151936 * (4 * 4 + 2)  # a 1024-token chunk: four fp32 copies and the bf16 projection
    short = Workload(rows=128, prompt=512, response=100)
    logits = {i.name: i.bytes for i in update_items(cfg, qwen, qwen.sizes(), short, micro=4)}["logits"]
    assert logits == 400 * 151936 * 18  # fewer tokens than a chunk: one chunk of all of them


def test_study_fits_on_80_gib_with_its_micro_batch(qwen):
    cfg = study()
    plan = memory_plan(cfg, qwen, [80.0, 141.0], 512, forward_follows_micro=False)
    small, large = plan.gpus
    assert small.fits and large.fits
    assert small.largest_micro_batch >= cfg.algo.micro_batch_size
    assert large.phases[0].total - small.phases[0].total == pytest.approx(0.5 * 61 * GIB, rel=1e-6)  # vLLM's share


def test_vllm_share_below_its_weights_is_reported(qwen):
    plan = memory_plan(study("rollout.vllm.gpu_memory_utilization=0.05"), qwen, [80.0], 512, False)
    assert not plan.gpus[0].fits and "rollout.vllm.gpu_memory_utilization" in plan.gpus[0].problem


def test_impossible_settings_are_errors(capsys):
    assert main(["experiment=med_rlvr", "trainer.devices=8", "rollout.max_new_tokens=40000"]) == 2
    assert "rollout.max_new_tokens" in capsys.readouterr().err
    assert main(["experiment=med_rlvr", "trainer.devices=8", "gpu_memory_gib=[0]"]) == 2
    assert "gpu_memory_gib" in capsys.readouterr().err
    assert main(["algo=sft"]) == 2
    assert "algo=sft" in capsys.readouterr().err
    assert main(["experiment=med_rlvr"]) == 2  # trainer.devices=-1: every GPU of a node the plan cannot see
    assert "trainer.devices" in capsys.readouterr().err
