"""Decoding linears: packed (oneDNN) and weight-major layers give the values of ``F.linear``; small inputs take
them only inside the block; LoRA merged into a copy; packed copies hold the weights of the block's start."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from medrlvr.rollout import decoding_linears as decoding
from medrlvr.rollout.decoding_linears import ROWS_PER_PART, can_pack, decoding_linears, packed_linear, weight_major_linear

needs_onednn = pytest.mark.skipif(not can_pack(torch.ones(1)), reason="oneDNN not available in this torch build")


def test_weight_major_equals_f_linear_with_bias_batch_dims_and_a_weight_split_in_parts():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(3, 2, 16), torch.randn(2 * ROWS_PER_PART + 5, 16), torch.randn(2 * ROWS_PER_PART + 5)
    out = weight_major_linear(x, weight, bias)
    assert out.shape == (3, 2, 2 * ROWS_PER_PART + 5) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight_major_linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("rows", [1, 5, 32, 70])  # packed for 32 rows; fewer and more work too
def test_packed_equals_f_linear_for_any_number_of_rows(rows):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(rows, 1, 48), torch.randn(130, 48), torch.randn(130)
    with_bias, without = packed_linear(weight, bias, 32), packed_linear(weight, None, 32)
    assert with_bias(x).shape == (rows, 1, 130)
    torch.testing.assert_close(with_bias(x), F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(without(x), F.linear(x, weight), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not can_pack(torch.ones(1, dtype=torch.bfloat16)), reason="no bf16 oneDNN on this CPU")
def test_packed_bf16_equals_f_linear_in_bf16():
    torch.manual_seed(0)
    x, weight = torch.randn(6, 1, 48).bfloat16(), torch.randn(130, 48).bfloat16()
    out = packed_linear(weight, None, 32)(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.linear(x.float(), weight.float()), atol=0.1, rtol=0.02)


def test_only_cpu_float_weights_are_packed():
    assert not can_pack(torch.ones(2, 2, dtype=torch.float16))
    assert not can_pack(torch.ones(2, 2, dtype=torch.float64))
    assert not can_pack(torch.ones(2, 2, device="meta"))


def count_small_calls(monkeypatch) -> list[int]:
    """Rows of each call that takes a decoding linear (packed or weight-major)."""
    rows: list[int] = []

    def counted_weight_major(x, weight, bias=None):
        rows.append(x.shape[0])
        return weight_major_linear(x, weight, bias)

    def counted_packed(weight, bias, max_rows):
        run = packed_linear(weight, bias, max_rows)
        return lambda x: rows.append(x.shape[0]) or run(x)

    monkeypatch.setattr(decoding, "weight_major_linear", counted_weight_major)
    monkeypatch.setattr(decoding, "packed_linear", counted_packed)
    return rows


@pytest.mark.parametrize("fixed_weights", [True, False])
def test_small_inputs_take_a_decoding_linear_only_inside_the_block_and_hooks_still_run(monkeypatch, fixed_weights):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3, bias=False))
    seen = []
    model[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    routed_rows = count_small_calls(monkeypatch)
    small, large = torch.randn(2, 8), torch.randn(100, 8)
    with torch.no_grad():
        plain = model(small)
        with decoding_linears(model, max_rows=64, fixed_weights=fixed_weights):
            routed, prefill = model(small), model(large)
        after = model(small)
    assert routed_rows == [2, 2]  # both layers for 2 rows, neither for 100 nor outside the block
    torch.testing.assert_close(routed, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(prefill, F.linear(torch.relu(F.linear(large, model[0].weight, model[0].bias)), model[2].weight))
    assert seen == [2, 2, 100, 2]  # the module's hooks ran in every call
    assert torch.equal(after, plain) and "forward" not in model[0].__dict__  # restored


@needs_onednn
def test_packed_copies_hold_the_weights_of_the_blocks_start_and_live_weights_are_read_otherwise():
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 4), torch.randn(2, 8)
    with torch.no_grad():
        before = layer(x)
        with decoding_linears(layer, fixed_weights=True):
            layer.weight.mul_(2)  # as an update would: the packed copy does not see it
            packed = layer(x)
        with decoding_linears(layer, fixed_weights=False):
            live = layer(x)
    torch.testing.assert_close(packed, before, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(live, F.linear(x, layer.weight, layer.bias), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(live, before)


def lora_model():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0"], init_lora_weights=False))


@pytest.mark.parametrize("fixed_weights, routed_calls", [(True, 2), (False, 4)])
def test_lora_layers_run_merged_into_a_copy_and_the_trained_weights_stay_as_they_were(monkeypatch, fixed_weights, routed_calls):
    model = lora_model()
    model.eval()
    lora = model.base_model.model[0]
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    routed_rows = count_small_calls(monkeypatch)
    x = torch.randn(2, 8)
    with torch.no_grad():
        plain = model(x)
        with model.disable_adapter():
            without_adapters = model(x)
        with decoding_linears(model, fixed_weights=fixed_weights):
            routed = model(x)
    assert not torch.allclose(plain, without_adapters)  # the adapter changes the output
    torch.testing.assert_close(routed, plain, atol=1e-6, rtol=1e-6)
    # merged: the LoRA layer and the last linear; not merged: base, A and B of the LoRA layer, and the last linear
    assert routed_rows == [2] * routed_calls
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
    assert not lora.merged and "forward" not in lora.__dict__


class Attention(nn.Module):
    """Query, key and value of one input (as transformers' attention modules), and an output layer of another."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(8, 4), nn.Linear(8, 2, bias=False), nn.Linear(8, 2)
        self.o_proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self.o_proj(torch.cat([q, k, v], -1))


@needs_onednn
def test_query_key_and_value_run_as_one_packed_linear_and_give_each_its_own_output_in_any_call_order(monkeypatch):
    torch.manual_seed(0)
    module, x, y = Attention(), torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    packed_outputs = []

    def counted_packed(weight, bias, max_rows):
        run = packed_linear(weight, bias, max_rows)
        return lambda x: packed_outputs.append(weight.shape[0]) or run(x)

    monkeypatch.setattr(decoding, "packed_linear", counted_packed)
    with torch.no_grad():
        plain = module(x)
        with decoding_linears(module):
            fused = module(x)
            assert packed_outputs == [8, 8]  # one linear of 4 + 2 + 2 outputs, then o_proj
            mixed = module.v_proj(y), module.q_proj(x), module.k_proj(y), module.k_proj(y)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    expected = F.linear(y, module.v_proj.weight, module.v_proj.bias), F.linear(x, module.q_proj.weight, module.q_proj.bias)
    for got, want in zip(mixed, (*expected, F.linear(y, module.k_proj.weight), F.linear(y, module.k_proj.weight))):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
