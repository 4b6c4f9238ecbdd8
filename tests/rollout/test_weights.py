"""Streaming a policy's weights for a rollout engine: checkpoint names, LoRA merged on the fly, ZeRO-3 gathered."""

import copy
import subprocess
import sys
import textwrap

import torch

from medrlvr.models.actor_critic import LoraSettings, with_lora
from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.weights import iter_policy_weights


def test_plain_model_yields_its_parameters_under_checkpoint_names(tokenizer):
    model = load_causal_lm("tiny", tokenizer, seed=0)
    streamed = dict(iter_policy_weights(model))
    assert streamed.keys() == dict(model.named_parameters()).keys()
    assert "model.embed_tokens.weight" in streamed and "lm_head.weight" not in streamed  # tied: once
    assert all(streamed[n].data_ptr() == p.data_ptr() for n, p in model.named_parameters())  # no copies


def test_lora_is_merged_on_the_fly_without_touching_the_policy(tokenizer):
    policy = with_lora(load_causal_lm("tiny", tokenizer, seed=0), LoraSettings(rank=4, target_modules=("q_proj", "v_proj")))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # B = 0 at init would make the merge invisible
    before = {n: p.clone() for n, p in policy.named_parameters()}
    streamed = dict(iter_policy_weights(policy))
    merged = copy.deepcopy(policy).merge_and_unload()
    assert streamed.keys() == dict(merged.named_parameters()).keys()
    for name, param in merged.named_parameters():
        torch.testing.assert_close(streamed[name], param, rtol=0, atol=1e-6, msg=name)
    q_base = before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert not torch.allclose(streamed["model.layers.0.self_attn.q_proj.weight"], q_base)
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())
    with policy.disable_adapter():
        torch.testing.assert_close(dict(iter_policy_weights(policy))["model.layers.0.self_attn.q_proj.weight"], q_base)


ZERO3_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    import deepspeed, torch
    from medrlvr.models.actor_critic import LoraSettings, with_lora
    from medrlvr.models.loading import load_causal_lm, load_tokenizer
    from medrlvr.rollout.weights import iter_policy_weights

    torch.set_num_threads(1)
    deepspeed.init_distributed("gloo")
    tokenizer = load_tokenizer("tiny")
    expected = {}
    for lora in (0, 4):
        dense = with_lora(load_causal_lm("tiny", tokenizer, seed=0), LoraSettings(rank=lora, target_modules=("q_proj",)))
        with torch.no_grad():
            for name, param in dense.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)
        expected[lora] = {n: p.clone() for n, p in iter_policy_weights(dense)}
        config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}}
        with deepspeed.zero.Init(config_dict_or_path=config):
            model = with_lora(load_causal_lm("tiny", tokenizer, seed=0), LoraSettings(rank=lora, target_modules=("q_proj",)))
        for name, param in model.named_parameters():
            assert param.numel() == 0 and hasattr(param, "ds_id"), name  # partitioned
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
                param.copy_(dict(dense.named_parameters())[name])
        streamed = dict(iter_policy_weights(model))
        assert streamed.keys() == expected[lora].keys(), (lora, streamed.keys() ^ expected[lora].keys())
        for name, tensor in streamed.items():
            torch.testing.assert_close(tensor, expected[lora][name], rtol=0, atol=1e-6, msg=name)
        assert all(p.numel() == 0 for p in model.parameters())  # released again
    print("ok")
    """
)


def test_zero3_partitioned_parameters_are_gathered_one_layer_at_a_time(tmp_path):
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout[-2000:] + result.stderr[-4000:]
