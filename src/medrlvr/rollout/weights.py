"""A policy's current weights as ``(checkpoint name, tensor)`` pairs, one at a time, for a rollout engine.

The names are those of the Hugging Face checkpoint (``model.layers.0.self_attn.q_proj.weight``), which is
what inference engines load. The policy is never copied or modified: LoRA adapters are merged on the fly
per layer, and parameters partitioned by DeepSpeed ZeRO-3 are gathered one layer at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_BASE = ".base_layer"


def iter_policy_weights(policy: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every parameter of ``policy`` (a transformers causal LM, optionally wrapped by peft).

    A LoRA-wrapped linear layer yields ``W + Σ ΔW`` over its active adapters (peft's ``get_delta_weight``,
    skipped when the adapters are disabled or already merged into ``W``); the adapter matrices are not
    yielded. Tied parameters come once, under their first name (``model.embed_tokens.weight``). A ZeRO-3
    parameter (it carries ``ds_id``) is gathered together with the rest of its LoRA layer, copied, and
    released before the next one, so peak extra memory is one layer; every rank must iterate together.
    """
    model = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    lora_layers = {name: module for name, module in model.named_modules() if _is_lora_layer(module)}
    for name, param in model.named_parameters():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer = lora_layers.get(owner.removesuffix(_BASE)) if owner.endswith(_BASE) else None
        if layer is None:
            with _gathered([param]):
                yield name, _materialise(param)
            continue
        with _gathered(list(layer.parameters())):
            weight = param.detach()
            if leaf == "weight" and not layer.merged and not layer.disable_adapters:
                weight = weight + sum(
                    (layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A),
                    torch.zeros_like(weight),
                )
            yield f"{owner.removesuffix(_BASE)}.{leaf}", _materialise(param, weight)


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def _materialise(param: nn.Parameter, value: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor to hand over: a copy when the storage of a gathered ZeRO-3 parameter is about to be freed."""
    value = param.detach() if value is None else value
    return value.clone() if hasattr(param, "ds_id") and value.data_ptr() == param.data_ptr() else value


def _gathered(params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
    """DeepSpeed ZeRO-3's gather of ``params`` (read-only), or nothing when they are not partitioned."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)
