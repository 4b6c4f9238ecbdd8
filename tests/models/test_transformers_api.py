"""The cache argument and checkpointing switch are those of the installed transformers (renamed in 5.24)."""

import inspect

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM, LlamaModel, Qwen2ForCausalLM, Qwen2Model

from medrlvr.models.loading import load_causal_lm
from medrlvr.models.transformers_api import CACHE_ARGUMENT, cache_argument, enable_activation_checkpointing


@pytest.mark.parametrize("model_class", [LlamaModel, LlamaForCausalLM, Qwen2Model, Qwen2ForCausalLM])
def test_the_cache_argument_is_a_named_parameter_of_the_installed_models(model_class):
    # A name the forward does not declare would vanish into its **kwargs: the forward would run without the cache.
    assert CACHE_ARGUMENT in inspect.signature(model_class.forward).parameters


@torch.no_grad()
def test_a_forward_continues_from_the_cache_it_is_handed(tokenizer):
    model = load_causal_lm("tiny", tokenizer, seed=0).eval()
    ids = torch.tensor([[5, 17, 9, 30, 12, 7]])
    whole = model(input_ids=ids).logits[:, -1]
    cache = DynamicCache()
    model(input_ids=ids[:, :5], **cache_argument(cache), use_cache=True)
    assert cache.get_seq_length() == 5
    continued = model(input_ids=ids[:, 5:], position_ids=torch.tensor([[5]]), **cache_argument(cache), use_cache=True).logits[:, -1]
    alone = model(input_ids=ids[:, 5:], position_ids=torch.tensor([[5]])).logits[:, -1]
    torch.testing.assert_close(continued, whole, atol=1e-5, rtol=0)
    assert not torch.allclose(alone, whole, atol=1e-3)  # the last token without its prefix: what an unread cache gives


def test_activation_checkpointing_is_turned_on(tokenizer):
    model = load_causal_lm("tiny", tokenizer, seed=0)
    assert not model.model.gradient_checkpointing
    enable_activation_checkpointing(model)
    assert model.model.gradient_checkpointing
