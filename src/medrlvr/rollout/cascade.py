"""Decoding attention over a KV cache kept in three blocks, so that no prompt's KV is copied per sample.

A rollout batch holds ``S`` samples of each of ``G`` prompts, and the prompts begin with the same tokens (a
system prompt, a worked example). Copying the prompt KV into every row made a decoding step read the
prompts ``S`` times and the shared prefix ``G × S`` times: at the default size that was as many bytes as
the model's weights. :class:`CascadeKV` keeps, per layer,

- the shared prefix once: ``(kv_heads, P, head_dim)``,
- the rest of each prompt once: ``(G, kv_heads, U, head_dim)``, padding masked,
- the tokens each row decoded: ``(rows, kv_heads, T, head_dim)``,

and :func:`cascade_attention` attends a decoding step's queries to the three blocks, combining them with one
softmax over all scores (a maximum taken across blocks, then sums of exponentials): the result is the
attention over the concatenated KV of a plain cache. Finished rows leave the row block (:meth:`CascadeKV.keep`);
the prefix and prompt blocks never move.

The attention is registered with transformers as :data:`ATTENTION` and used while :func:`cascade_attention_in`
is active. A forward that does not pass ``cascade=`` (prefill) falls through to transformers' SDPA attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ATTENTION = "medrlvr_cascade"


@dataclass
class CascadeKV:
    """The KV of a decoding batch per layer, in a prefix, a prompt and a row block (see the module docstring).

    ``prompt_bias`` is ``(G, U)``: 0 for prompt tokens, ``-inf`` for padding. ``slots`` are the batch rows still
    decoding (ascending), ``group_size`` the rows per prompt (row ``r`` samples prompt ``r // group_size``),
    ``length`` the tokens written to the row block so far.
    """

    prefix_keys: list[torch.Tensor]
    prefix_values: list[torch.Tensor]
    prompt_keys: list[torch.Tensor]
    prompt_values: list[torch.Tensor]
    prompt_bias: torch.Tensor
    row_keys: list[torch.Tensor]
    row_values: list[torch.Tensor]
    slots: torch.Tensor
    group_size: int
    length: int = 0

    @classmethod
    def from_prompt_cache(
        cls, cache: DynamicCache, shared: int, prompt_mask: torch.Tensor, group_size: int, max_new_tokens: int,
        config: PretrainedConfig,
    ) -> CascadeKV:
        """Blocks from the KV of ``G`` prompts, ``(G, kv_heads, width, head_dim)`` per layer in ``cache``, whose first
        ``shared`` columns are the same in every prompt; ``prompt_mask`` ``(G, width)``. Prefix and prompt blocks are
        views of ``cache``; the row block has room for ``max_new_tokens`` per row."""
        groups, width = prompt_mask.shape
        rows, device = groups * group_size, prompt_mask.device
        kv_heads, dim = config.num_key_value_heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        layers = [(layer.keys, layer.values) for layer in cache.layers] if width else []
        if not layers:
            empty = torch.empty(groups, kv_heads, 0, dim, device=device)
            layers = [(empty, empty)] * config.num_hidden_layers
        dtype = layers[0][0].dtype
        bias = torch.zeros(groups, width - shared, dtype=dtype, device=device)
        bias.masked_fill_(~prompt_mask[:, shared:].bool(), float("-inf"))

        def empty_rows() -> torch.Tensor:
            return torch.empty(rows, kv_heads, max_new_tokens, dim, dtype=dtype, device=device)

        return cls(
            prefix_keys=[k[0, :, :shared] for k, _ in layers],
            prefix_values=[v[0, :, :shared] for _, v in layers],
            prompt_keys=[k[:, :, shared:] for k, _ in layers],
            prompt_values=[v[:, :, shared:] for _, v in layers],
            prompt_bias=bias,
            row_keys=[empty_rows() for _ in layers],
            row_values=[empty_rows() for _ in layers],
            slots=torch.arange(rows, device=device),
            group_size=group_size,
        )

    @property
    def rows(self) -> int:
        """Rows of the batch, decoding or not."""
        return self.prompt_bias.shape[0] * self.group_size

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the live slots at ``index`` (positions in ``slots``)."""
        self.slots = self.slots[index]
        self.row_keys = [k[index] for k in self.row_keys]
        self.row_values = [v[index] for v in self.row_values]

    def advance(self) -> None:
        """Count the token every layer wrote in this step."""
        self.length += 1

    def attend(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        """Store this step's ``key``/``value`` ``(n, kv_heads, 1, d)`` and attend ``query`` ``(n, heads, 1, d)`` to
        everything the rows have seen: ``(n, heads, 1, d)``."""
        step = self.length
        row_keys, row_values = self.row_keys[layer], self.row_values[layer]
        row_keys[:, :, step] = key[:, :, 0]
        row_values[:, :, step] = value[:, :, 0]
        n, heads, _, dim = query.shape
        kv_heads = key.shape[1]
        per_kv = heads // kv_heads
        query = query.reshape(n, kv_heads, per_kv, dim) * scaling

        # scores of each block, (..., keys) with the queries laid out as the block needs them
        rows = query @ row_keys[:, :, : step + 1].transpose(-1, -2)  # (n, kv_heads, per_kv, step + 1)
        prefix_keys = self.prefix_keys[layer]
        prefix = None
        if prefix_keys.shape[1]:
            by_head = query.permute(1, 0, 2, 3).reshape(kv_heads, n * per_kv, dim)
            prefix = by_head @ prefix_keys.transpose(-1, -2)  # (kv_heads, n * per_kv, P)
        prompt_keys = self.prompt_keys[layer]
        prompt = None
        if prompt_keys.shape[2]:
            prompt = self._by_prompt(query) @ prompt_keys.transpose(-1, -2)  # (G, kv_heads, S * per_kv, U)
            prompt = prompt + self.prompt_bias[:, None, None, :]

        # one softmax over the three blocks: a shared maximum per query, then exponentials and sums
        top = rows.amax(-1)  # (n, kv_heads, per_kv)
        if prefix is not None:
            top = torch.maximum(top, prefix.amax(-1).reshape(kv_heads, n, per_kv).transpose(0, 1))
        if prompt is not None:
            top = torch.maximum(top, self._by_row(prompt.amax(-1, keepdim=True))[..., 0])
        weights = torch.exp(rows - top[..., None])
        output = weights @ row_values[:, :, : step + 1]
        total = weights.sum(-1, keepdim=True)
        if prefix is not None:
            weights = torch.exp(prefix - top.transpose(0, 1).reshape(kv_heads, n * per_kv, 1))
            output = output + (weights @ self.prefix_values[layer]).reshape(kv_heads, n, per_kv, dim).transpose(0, 1)
            total = total + weights.sum(-1).reshape(kv_heads, n, per_kv, 1).transpose(0, 1)
        if prompt is not None:
            weights = torch.exp(prompt - self._by_prompt(top[..., None]))
            output = output + self._by_row(weights @ self.prompt_values[layer])
            total = total + self._by_row(weights.sum(-1, keepdim=True))
        return (output / total).reshape(n, heads, 1, dim)

    def _by_prompt(self, per_row: torch.Tensor) -> torch.Tensor:
        """``(n, kv_heads, per_kv, x)`` of the live slots → ``(G, kv_heads, S * per_kv, x)``, zeros for finished rows."""
        _, kv_heads, per_kv, width = per_row.shape
        full = per_row.new_zeros(self.rows, kv_heads, per_kv, width)
        full[self.slots] = per_row
        groups = self.prompt_bias.shape[0]
        full = full.reshape(groups, self.group_size, kv_heads, per_kv, width).transpose(1, 2)
        return full.reshape(groups, kv_heads, self.group_size * per_kv, width)

    def _by_row(self, per_prompt: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_by_prompt`: ``(G, kv_heads, S * per_kv, x)`` → ``(n, kv_heads, per_kv, x)`` of the live slots."""
        groups, kv_heads, _, width = per_prompt.shape
        full = per_prompt.reshape(groups, kv_heads, self.group_size, -1, width).transpose(1, 2)
        return full.reshape(self.rows, kv_heads, -1, width)[self.slots]


def cascade_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cascade: CascadeKV | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: a decoding step over ``cascade`` when given, else SDPA attention.

    Returns ``(n, 1, heads, head_dim)``, as transformers' attention functions do.
    """
    if cascade is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[2] != 1:
        raise ValueError(f"cascade attention decodes one token per row, got {query.shape[2]}")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return cascade.attend(module.layer_idx, query, key, value, scale).transpose(1, 2), None


AttentionInterface.register(ATTENTION, cascade_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


@contextlib.contextmanager
def cascade_attention_in(model: nn.Module) -> Iterator[None]:
    """Route ``model``'s attention through :func:`cascade_attention` meanwhile (a transformers model)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
