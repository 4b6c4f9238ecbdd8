"""Sizes of the PPO models, read from a skeleton built on the meta device (shapes only, no memory).

Parameter counts come from the transformers model built from its config, with the project's own LoRA wrapping.
Activation bytes come from running one decoder layer forward on meta tensors and adding up what autograd saves
for the backward pass; attention is counted as a fused kernel (FlashAttention or torch's memory-efficient SDPA),
which saves queries, keys, values, output and log-sum-exp rather than the ``L × L`` scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from medrlvr.models.actor_critic import LoraSettings, with_lora
from medrlvr.models.prompt_sharing import unwrap


class _FusedAttention(torch.autograd.Function):
    """Stands for a fused attention kernel on meta tensors: saves q, k, v, output and log-sum-exp."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, lse)
        return out


def _fused_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return _FusedAttention.apply(query, key, value)


def saved_bytes(run: Callable[[], object], exclude: set[int]) -> int:
    """Bytes autograd saves for backward while ``run()`` executes, each storage once, leaving out the storages
    whose ids (``untyped_storage()._cdata``) are in ``exclude`` (the parameters)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in exclude:
            storages[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


@dataclass(frozen=True)
class ModelSizes:
    """Counts of one causal LM as the PPO module uses it; activation bytes are per token of a micro-batch row.

    ``lm_params``: the whole LM (tied embeddings once); ``trunk_params``: the decoder without the output layer;
    ``lora_params``: the adapters ``model.lora_*`` add to one model (0 for full fine-tuning);
    ``largest_layer_params``: the module with most parameters of its own (DeepSpeed's ZeRO-3 estimator gathers
    it whole); ``kv_bytes_per_token``: keys and values of every layer in ``dtype``.
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    max_positions: int
    lm_params: int
    trunk_params: int
    lora_params: int
    trainable_layers: int
    largest_layer_params: int
    kv_bytes_per_token: int
    dtype_bytes: int


class Skeleton:
    """A causal LM (with the run's LoRA adapters) built on the meta device in the activation dtype."""

    def __init__(self, config: PretrainedConfig, lora: LoraSettings, dtype: torch.dtype) -> None:
        with torch.device("meta"):
            self.model = with_lora(AutoModelForCausalLM.from_config(config, dtype=dtype), lora)
        self.config = config
        self.lora = lora
        self.dtype = dtype
        self.decoder = unwrap(self.model).get_decoder()
        self._parameters = {p.untyped_storage()._cdata for p in self.model.parameters()}

    def sizes(self) -> ModelSizes:
        lm = unwrap(self.model)
        base = [p for n, p in lm.named_parameters() if "lora_" not in n]
        lora = sum(p.numel() for n, p in lm.named_parameters() if "lora_" in n)
        trunk = sum(p.numel() for n, p in self.decoder.named_parameters() if "lora_" not in n)
        layers = self.config.num_hidden_layers
        heads = self.config.num_attention_heads
        head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // heads
        kv_heads = getattr(self.config, "num_key_value_heads", None) or heads
        element = torch.empty((), dtype=self.dtype).element_size()
        return ModelSizes(
            hidden_size=self.config.hidden_size,
            intermediate_size=self.config.intermediate_size,
            num_layers=layers,
            vocab_size=self.config.vocab_size,
            max_positions=self.config.max_position_embeddings,
            lm_params=sum(p.numel() for p in base),
            trunk_params=trunk,
            lora_params=lora,
            trainable_layers=self.lora.top_layers if self.lora.rank and 0 < self.lora.top_layers < layers else layers,
            largest_layer_params=max(sum(p.numel() for p in m.parameters(recurse=False)) for m in lm.modules()),
            kv_bytes_per_token=2 * layers * kv_heads * head_dim * element,
            dtype_bytes=element,
        )

    def layer_saved_bytes(self, rows: int, length: int) -> int:
        """Bytes the last decoder layer (the first to run backward; it carries LoRA when any layer does) saves
        for backward on ``rows × length`` tokens."""
        layer = self.decoder.layers[-1]
        hidden = torch.empty(rows, length, self.config.hidden_size, device="meta", dtype=self.dtype, requires_grad=True)
        positions = torch.arange(length, device="meta").expand(rows, -1)
        rotary = self.decoder.rotary_emb(hidden, positions)

        def run() -> None:
            with self._fused_attention():
                layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rotary)

        return saved_bytes(run, self._parameters)

    def norm_saved_bytes(self, rows: int, length: int) -> int:
        """Bytes the final norm saves for backward on ``rows × length`` tokens."""
        hidden = torch.empty(rows, length, self.config.hidden_size, device="meta", dtype=self.dtype, requires_grad=True)
        return saved_bytes(lambda: self.decoder.norm(hidden), self._parameters)

    @staticmethod
    @contextlib.contextmanager
    def _fused_attention() -> Iterator[None]:
        with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _fused_sdpa):
            yield

