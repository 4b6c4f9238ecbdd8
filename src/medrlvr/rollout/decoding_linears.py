"""Linear layers for decoding batches of a few rows: weights packed once for oneDNN, or read weight-first.

``F.linear(x, W)`` is ``x @ W.T``: with ``x`` of 2–32 rows the CPU BLAS repacks ``W`` on every call and
streams it at a fraction of the memory bandwidth. Two remedies, measured on the default model's 210 linear
layers (fp32, 2 threads, weights out of cache):

- **packed** (CPU, oneDNN): each weight is reordered once into oneDNN's blocked layout for the batch size
  (``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile`` uses for frozen CPU weights) and
  every call runs oneDNN's inner product on it: 20–26 ms at 4–8 rows and 56 ms at 32, against 38–64 and 74
  weight-first; the 49k-row LM head 5–11 ms against 8–29. The copy is made on entering the block, so it
  holds the weights of that moment; it costs their size in memory while the block runs. Layers that read
  the same input (query, key and value; gate and up) share one packed weight and run as one linear:
  21–24 ms instead of 27–31 at 4–12 rows, 49 instead of 59 at 32.
- **weight-first** (any device, weights read where they lie when the block runs): ``(W @ x.T).T``, large
  weights (the tied embedding used as the LM head) in parts of 2048 rows, which fit the caches: 31 ms at 4
  rows and 63 at 32, against ``F.linear``'s 54 and 73.

Both compute the same dot products as ``F.linear``, summed in another order.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable, Iterator

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

ROWS_PER_PART = 2048
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # names in transformers' Llama-like models
Linear = Callable[[torch.Tensor], torch.Tensor]


def weight_major_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, ``(..., in)`` → ``(..., out)``, computed as ``weight @ x.T`` in parts of
    :data:`ROWS_PER_PART` weight rows."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.cat([part @ rows.T for part in weight.split(ROWS_PER_PART)]).T.contiguous()
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def can_pack(weight: torch.Tensor) -> bool:
    """Whether oneDNN can run a linear layer of ``weight`` from a packed copy (a CPU tensor of fp32, or of bf16 on
    CPUs with bf16 instructions)."""
    return (
        weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and (weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    )


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Linear:
    """``x ↦ F.linear(x, weight, bias)`` ``(..., in)`` → ``(..., out)`` by oneDNN, from a copy of ``weight`` packed
    now for batches of about ``rows`` rows (any number works)."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    bias = None if bias is None else bias.detach()
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def fused_linears(weights: list[tuple[torch.Tensor, torch.Tensor | None]], rows: int) -> list[Linear]:
    """Packed linears of ``weights`` (``(out_i, in)`` each, with their biases) that run as one when called on the same
    input: the first call computes every output, the others take theirs. Any call order gives ``F.linear``'s value."""
    biases = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in weights]
    run = packed_linear(torch.cat([w for w, _ in weights]), None if all(b is None for _, b in weights) else torch.cat(biases), rows)
    ends = torch.tensor([w.shape[0] for w, _ in weights]).cumsum(0).tolist()
    parts = list(zip([0, *ends[:-1]], ends))
    pending: dict[int, torch.Tensor] = {}
    computed_for: list[torch.Tensor | None] = [None]

    def linear(x: torch.Tensor, member: int) -> torch.Tensor:
        if computed_for[0] is not x or member not in pending:
            out = run(x)
            pending.update({i: out[..., start:end] for i, (start, end) in enumerate(parts)})
            computed_for[0] = x
        result = pending.pop(member)
        if not pending:
            computed_for[0] = None
        return result

    return [functools.partial(linear, member=i) for i in range(len(weights))]


@contextlib.contextmanager
def decoding_linears(model: nn.Module, max_rows: int = 64, fixed_weights: bool = True) -> Iterator[None]:
    """Meanwhile, every ``nn.Linear`` of ``model`` (the LM head included) given at most ``max_rows`` input rows
    computes a packed linear (where :func:`can_pack`) or :func:`weight_major_linear`; larger inputs (a prefill)
    keep their own forward.

    ``fixed_weights``: the weights are all in memory and do not change within the block. Each layer then gets
    a packed copy, and each plain LoRA layer (peft) runs as one linear over a copy of its weight with its
    active adapters merged (peft's ``get_delta_weight``): a decoding step skips the adapters' four extra
    operations per layer, and the trained weights are never modified. The layers of a module that read one
    input (:data:`SIBLINGS`: attention's query, key and value; the MLP's gate and up) share one packed copy
    and run as one linear (:func:`fused_linears`). DeepSpeed ZeRO-3 gathers a layer's weights in the hooks
    of the modules that hold them, so partitioned models need ``fixed_weights=False``: every layer then
    reads its own weight, weight-first, at each call. Only ``forward`` is replaced, so hooks on the module
    still run.
    """
    with torch.no_grad():
        weights: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for module in model.modules():
            if fixed_weights and _plain_lora(module):
                delta = sum(module.get_delta_weight(name) for name in module.active_adapters)
                weights[module] = (module.base_layer.weight + delta, module.base_layer.bias)
            elif type(module) is nn.Linear:
                weights[module] = (module.weight, module.bias)
        small: dict[nn.Module, Linear] = {}
        for parent in model.modules() if fixed_weights else ():
            for names in SIBLINGS:
                members = [getattr(parent, name, None) for name in names]
                if _can_fuse([weights.get(member) for member in members]):
                    small.update(zip(members, fused_linears([weights[member] for member in members], max_rows)))
        for module, (weight, bias) in weights.items():
            if module in small:
                continue
            if fixed_weights and can_pack(weight):
                small[module] = packed_linear(weight, bias, max_rows)
            else:
                small[module] = functools.partial(weight_major_linear, weight=weight, bias=bias)

    def forward(self: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if x.numel() // max(x.shape[-1], 1) <= max_rows:
            return small[self](x)
        return type(self).forward(self, x, *args, **kwargs)

    for module in small:
        module.forward = types.MethodType(forward, module)
    try:
        yield
    finally:
        for module in small:
            del module.forward


def _can_fuse(weights: list[tuple[torch.Tensor, torch.Tensor | None] | None]) -> bool:
    """Whether linear layers of these (weight, bias) pairs (None: not a routed layer) can share one packed weight."""
    if any(w is None for w in weights):
        return False
    first = weights[0][0]
    return all(can_pack(w) and w.shape[1] == first.shape[1] and w.dtype == first.dtype for w, _ in weights)


def _plain_lora(module: nn.Module) -> bool:
    """A peft LoRA linear layer whose active adapters are plain low-rank deltas (no DoRA, no bias), not merged."""
    adapters = getattr(module, "active_adapters", None)
    return (
        isinstance(module, LoraLayer)
        and type(getattr(module, "base_layer", None)) is nn.Linear
        and not module.disable_adapters
        and not module.merged
        and bool(adapters)
        and all(name in module.lora_A and name not in module.lora_variant for name in adapters)
        and not any(module.lora_bias.get(name, False) for name in adapters)
    )
