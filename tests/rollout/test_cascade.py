"""Cascade attention: a decoding step over prefix, prompt and row blocks equals attention over the plain KV."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig

from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.cascade import CascadeKV, cascade_attention_in

GROUPS, SAMPLES, KV_HEADS, HEADS, DIM, SHARED, WIDTH = 3, 2, 2, 4, 8, 5, 9


def prompt_kv(shared: int = SHARED):
    """A one-layer cache of 3 prompts, 9 columns each, the first ``shared`` equal; prompt 1 is padding after them."""
    torch.manual_seed(0)
    keys, values = torch.randn(GROUPS, KV_HEADS, WIDTH, DIM), torch.randn(GROUPS, KV_HEADS, WIDTH, DIM)
    keys[:, :, :shared], values[:, :, :shared] = keys[:1, :, :shared], values[:1, :, :shared]
    mask = torch.ones(GROUPS, WIDTH, dtype=torch.long)
    mask[1, shared:] = 0
    mask[2, shared : shared + 2] = 0
    cache = DynamicCache()
    cache.update(keys, values, 0)
    config = LlamaConfig(hidden_size=HEADS * DIM, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, num_hidden_layers=1)
    return CascadeKV.from_prompt_cache(cache, shared, mask, SAMPLES, 4, config), keys, values, mask


def plain_attention(query, keys, values, mask):
    """Per row: softmax(q k^T / sqrt(d)) v over the unmasked columns, each query head reading its KV head."""
    out = []
    for row in range(query.shape[0]):
        k, v = keys[row][:, mask[row].bool()], values[row][:, mask[row].bool()]
        k, v = k.repeat_interleave(HEADS // KV_HEADS, 0), v.repeat_interleave(HEADS // KV_HEADS, 0)
        out.append(torch.softmax(query[row] @ k.transpose(-1, -2) * DIM**-0.5, -1) @ v)
    return torch.stack(out)


@pytest.mark.parametrize("shared", [SHARED, 0])
def test_decoding_steps_equal_attention_over_the_concatenated_cache_while_rows_leave(shared):
    kv, keys, values, mask = prompt_kv(shared)
    rows = GROUPS * SAMPLES
    full_keys = keys.repeat_interleave(SAMPLES, 0)  # the plain cache: every sample holds a copy of its prompt
    full_values = values.repeat_interleave(SAMPLES, 0)
    full_mask = mask.repeat_interleave(SAMPLES, 0)
    live = torch.arange(rows)
    for step in range(3):
        query = torch.randn(len(live), HEADS, 1, DIM)
        key, value = torch.randn(len(live), KV_HEADS, 1, DIM), torch.randn(len(live), KV_HEADS, 1, DIM)
        out = kv.attend(0, query, key, value, DIM**-0.5)
        kv.advance()
        full_keys = torch.cat([full_keys, torch.zeros(rows, KV_HEADS, 1, DIM)], 2)
        full_values = torch.cat([full_values, torch.zeros(rows, KV_HEADS, 1, DIM)], 2)
        full_keys[live, :, -1:], full_values[live, :, -1:] = key, value
        full_mask = torch.cat([full_mask, torch.ones(rows, 1, dtype=torch.long)], 1)
        expected = plain_attention(query, full_keys[live], full_values[live], full_mask[live])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        if step == 0:  # rows 1 and 4 finish: they leave the row block, prompt 1 keeps only its second sample
            keep = torch.tensor([0, 2, 3, 5])
            kv.keep(keep)
            live = live[keep]
    assert kv.slots.tolist() == [0, 2, 3, 5] and kv.row_keys[0].shape[0] == 4


def test_prefix_and_prompt_blocks_are_views_of_the_prefill_cache():
    kv, keys, _, _ = prompt_kv()
    assert kv.prefix_keys[0].shape == (KV_HEADS, SHARED, DIM) and kv.prompt_keys[0].shape == (GROUPS, KV_HEADS, WIDTH - SHARED, DIM)
    assert kv.prefix_keys[0].untyped_storage().data_ptr() == kv.prompt_keys[0].untyped_storage().data_ptr()


def test_the_model_falls_back_to_sdpa_without_a_cascade_and_is_restored(tokenizer):
    model = load_causal_lm("tiny", tokenizer, seed=0)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with cascade_attention_in(model):
            routed = model(input_ids=ids).logits
    assert torch.equal(plain, routed) and model.config._attn_implementation == "sdpa"
