"""The experience takes the frozen layers' output from the rollout when the engine kept it: the same tensors as
running the frozen layers again, up to float rounding, without running them."""

from dataclasses import replace

import pytest
import torch

from medrlvr.data.bundled import load_bundled
from medrlvr.models.actor_critic import ActorCritic, LoraSettings
from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.base import SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training import builders
from medrlvr.training.experience import make_experience

from tests.training.test_rollout_mismatch import smoke_config

SETTINGS = dict(
    temperature=0.7, kl_coef=0.05, kl_estimator="k1", advantage_estimator="gae", gamma=1.0, lam=1.0,
    group_eps=1e-9, whiten_advantages=True, forward_batch_size=8,
)


def rollout_with_layer_inputs():
    """Three prompts × 4 samples from the tiny model with LoRA on its top layer, the frozen layer's output kept."""
    cfg = smoke_config()
    tokenizer = builders.build_tokenizer(cfg.model)
    model = ActorCritic(load_causal_lm(cfg.model.name_or_path, tokenizer, seed=cfg.seed), LoraSettings(rank=4, top_layers=1), "shared")
    with torch.no_grad():  # adapters away from zero, so the actor differs from the reference
        for name, param in model.actor.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
    engine = HFRolloutEngine(model.actor, tokenizer, capture_layer=model.frozen_layers)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    rollout = engine.generate([prompts(e) for e in load_bundled("train")[:3]], SamplingParams(4, 12, 0.7, seed=5))
    return model, rollout


def test_experience_from_the_rollouts_layer_inputs_equals_running_the_frozen_layers():
    model, rollout = rollout_with_layer_inputs()
    assert model.frozen_layers == 1 and rollout.layer_inputs is not None
    scores = torch.tensor([1.0, 0.0, -1.0, 0.0] * 3)
    frozen_passes = []
    frozen_prefix = model.frozen_prefix
    model.frozen_prefix = lambda *args: frozen_passes.append(1) or frozen_prefix(*args)
    taken = make_experience(model, rollout, scores, **SETTINGS)
    assert not frozen_passes
    rerun = make_experience(model, replace(rollout, layer_inputs=None), scores, **SETTINGS)
    assert len(frozen_passes) == 2  # 12 rows in chunks of 8 (whole groups of 4)
    assert torch.equal(taken.frozen_hidden, rollout.layer_inputs)
    real = taken.response_mask.bool()
    for name in ("old_logprobs", "ref_logprobs", "values", "kl", "advantages"):
        torch.testing.assert_close(getattr(taken, name)[real], getattr(rerun, name)[real], atol=1e-5, rtol=0, msg=name)
    assert not torch.equal(taken.old_logprobs, taken.ref_logprobs)
    torch.testing.assert_close(taken.old_logprobs, rollout.logprobs, atol=1e-5, rtol=0)


def test_layer_inputs_of_another_layer_are_refused():
    model, rollout = rollout_with_layer_inputs()
    with pytest.raises(ValueError, match="inputs of layer 0, but the first trained layer is 1"):
        make_experience(model, replace(rollout, layer_inputs_of=0), torch.zeros(12), **SETTINGS)
