"""The shared-prompt prefill: a prefix once, each prompt once, then the cache repeated to the samples."""

import torch
from transformers import DynamicCache, StaticCache

from medrlvr.models.loading import load_causal_lm
from medrlvr.models.prompt_sharing import length_buckets, position_ids, prefill_prompts
from medrlvr.rollout.hf import pad_after_common_prefix


def test_prefill_gives_each_sample_the_kv_of_a_plain_pass_in_static_and_dynamic_caches(tokenizer):
    model = load_causal_lm("tiny", tokenizer, seed=0)
    prefix = "System: answer with one letter.\nUser: "
    prompts = [prefix + "Short?", prefix + "A longer question than the first?", prefix + "Mid length?"]
    token_lists = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ids, mask, shared = pad_after_common_prefix(token_lists, tokenizer.pad_token_id)
    assert shared > 5
    positions, copies, width = position_ids(mask), 2, ids.shape[1]

    def run(part: torch.Tensor, part_mask: torch.Tensor, part_positions: torch.Tensor, cache) -> torch.Tensor:
        return model(
            input_ids=part, attention_mask=part_mask, position_ids=part_positions, cache=cache, use_cache=True
        ).logits

    static, dynamic, plain = StaticCache(config=model.config, max_cache_len=width + 4), DynamicCache(), DynamicCache()
    with torch.no_grad():
        prefix_out, rest_out = prefill_prompts(run, ids, mask, positions, shared, copies, static)
        prefill_prompts(run, ids, mask, positions, shared, copies, dynamic)
        model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=plain, use_cache=True)
    assert prefix_out.shape[:2] == (1, shared) and rest_out.shape[:2] == (len(prompts), width - shared)
    valid = mask.bool().repeat_interleave(copies, 0)
    for static_layer, dynamic_layer, plain_layer in zip(static.layers, dynamic.layers, plain.layers):
        for name in ("keys", "values"):
            expected = getattr(plain_layer, name).repeat_interleave(copies, 0).transpose(1, 2)[valid]
            static_kv = getattr(static_layer, name)[:, :, :width].transpose(1, 2)[valid]
            assert getattr(dynamic_layer, name).shape[0] == len(prompts) * copies
            torch.testing.assert_close(getattr(dynamic_layer, name).transpose(1, 2)[valid], expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(static_kv, expected, atol=1e-5, rtol=0)


def test_length_buckets_by_hand():
    # longest first: rows 0, 3 (64), 1 (20), 2 (18), 4 (3). Costs with 16 per pass: one pass 5×64+16 = 336;
    # {0,3}{1,2,4} 144+76 = 220; {0,3}{1,2}{4} 144+56+19 = 219; {0,3}{1}{2}{4} 144+36+34+19 = 233.
    assert length_buckets([64, 20, 18, 64, 3]) == [[0, 3], [1, 2], [4]]
    assert length_buckets([64, 20, 18, 64, 3], pass_cost=1000) == [[0, 3, 1, 2, 4]]
    assert length_buckets([5, 5, 5], pass_cost=0) == [[0, 1, 2]]  # equal lengths gain nothing from a split
    assert length_buckets([]) == []
