"""Weight-major linear layers: the values of ``F.linear``, in parts for large weights, LoRA merged into a copy,
only while active."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from medrlvr.rollout import weight_major_linear as weight_major
from medrlvr.rollout.weight_major_linear import ROWS_PER_PART, weight_major_linear, weight_major_linears


def test_equals_f_linear_with_bias_batch_dims_and_a_weight_split_in_parts():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(3, 2, 16), torch.randn(2 * ROWS_PER_PART + 5, 16), torch.randn(2 * ROWS_PER_PART + 5)
    out = weight_major_linear(x, weight, bias)
    assert out.shape == (3, 2, 2 * ROWS_PER_PART + 5) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight_major_linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_small_inputs_take_the_weight_major_path_only_inside_the_context_and_hooks_still_run(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3, bias=False))
    seen = []
    model[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    routed_rows = []

    def counted(x, weight, bias=None):
        routed_rows.append(x.shape[0])
        return weight_major_linear(x, weight, bias)

    monkeypatch.setattr(weight_major, "weight_major_linear", counted)
    small, large = torch.randn(2, 8), torch.randn(100, 8)
    with torch.no_grad():
        plain = model(small)
        with weight_major_linears(model, max_rows=64):
            routed, prefill = model(small), model(large)
        after = model(small)
    assert routed_rows == [2, 2]  # both layers for 2 rows, neither for 100 nor outside the context
    torch.testing.assert_close(routed, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(prefill, F.linear(torch.relu(F.linear(large, model[0].weight, model[0].bias)), model[2].weight))
    assert seen == [2, 2, 100, 2]  # the module's hooks ran in every call
    assert torch.equal(after, plain) and "forward" not in model[0].__dict__  # restored


def lora_model():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0"], init_lora_weights=False))


@pytest.mark.parametrize("merge, routed_calls", [(True, 2), (False, 4)])
def test_lora_layers_run_merged_into_a_copy_and_the_trained_weights_stay_as_they_were(monkeypatch, merge, routed_calls):
    model = lora_model()
    model.eval()
    lora = model.base_model.model[0]
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    routed_rows = []

    def counted(x, weight, bias=None):
        routed_rows.append(x.shape[0])
        return weight_major_linear(x, weight, bias)

    monkeypatch.setattr(weight_major, "weight_major_linear", counted)
    x = torch.randn(2, 8)
    with torch.no_grad():
        plain = model(x)
        with model.disable_adapter():
            without_adapters = model(x)
        with weight_major_linears(model, merge_adapters=merge):
            routed = model(x)
    assert not torch.allclose(plain, without_adapters)  # the adapter changes the output
    torch.testing.assert_close(routed, plain, atol=1e-6, rtol=1e-6)
    # merged: the LoRA layer and the last linear; not merged: base, A and B of the LoRA layer, and the last linear
    assert routed_rows == [2] * routed_calls
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
    assert not lora.merged and "forward" not in lora.__dict__
