"""Building, generating from and training the models uses transformers' current API: no deprecation warnings."""

import warnings

import pytest
import torch

from medrlvr.models.actor_critic import ActorCritic, LoraSettings
from medrlvr.models.prompt_sharing import PromptSharing
from medrlvr.models.loading import load_causal_lm
from medrlvr.models.transformers_api import CACHE_ARGUMENT
from medrlvr.rollout.base import SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine

DEPRECATIONS = (DeprecationWarning, FutureWarning)


def _deprecations_from_transformers_or_peft(caught: list[warnings.WarningMessage]) -> list[str]:
    """Deprecation warnings whose text names transformers' API or that were raised inside transformers or peft."""
    return [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DEPRECATIONS)
        and ("/transformers/" in w.filename or "/peft/" in w.filename or "deprecated" in str(w.message))
    ]


def test_lora_actor_critic_build_generate_and_train_emit_no_deprecation(tokenizer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ActorCritic(
            load_causal_lm("tiny", tokenizer, seed=0), LoraSettings(rank=4, top_layers=1), "shared", gradient_checkpointing=True
        )
        engine = HFRolloutEngine(model.actor, tokenizer)
        params = SamplingParams(num_samples=2, max_new_tokens=4, seed=0, stop_strings=("</answer>",))
        out = engine.generate(["System: be brief. Q: one?", "System: be brief. Q: two more?"], params)
        ids = torch.cat([out.prompt_ids, out.response_ids], 1)
        mask = torch.cat([out.prompt_mask, out.response_mask], 1)
        sharing = PromptSharing.detect(ids, mask, out.prompt_ids.shape[1], group_size=2)
        hidden = model.frozen_prefix(ids, mask, sharing)
        model.train()
        forward = model.policy_forward(ids, mask, out.response_ids, with_values=True, frozen_hidden=hidden, sharing=sharing)
        (forward.logprobs.sum() + forward.values.sum()).backward()
        model.eval()
        with torch.no_grad():
            model.policy_forward(ids, mask, out.response_ids, reference=True, frozen_hidden=hidden, sharing=sharing)
    assert _deprecations_from_transformers_or_peft(caught) == []


@pytest.mark.skipif(CACHE_ARGUMENT != "cache", reason="past_key_values is deprecated from transformers 5.24 on")
def test_the_check_sees_a_transformers_deprecation(tokenizer):
    """The filter above is not blind: the deprecated ``past_key_values`` keyword is caught."""
    model = load_causal_lm("tiny", tokenizer, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(input_ids=torch.tensor([[1, 2, 3]]), past_key_values=None, use_cache=False)
    assert any("past_key_values" in message for message in _deprecations_from_transformers_or_peft(caught))
