"""Forward passes that run prompt tokens shared by several rows once, through a KV cache.

A batch of ``N = G × S`` rows holds ``S`` samples of each of ``G`` prompts, consecutive, laid out as
``[shared prefix (s)][rest of the prompt, padding included (p - s)][response (L - p)]``: the first ``s``
columns are the same in every row (a system prompt, a worked example), and the ``S`` rows of a group have
the same first ``p`` columns. :func:`prefill_prompts` fills a KV cache in two passes:

1. the prefix, ``(1, s)``, once; its cache is repeated to the ``G`` prompts: ``(G, s)``;
2. the rest of each prompt, ``(G, p - s)``, after it; the cache is repeated to the samples: ``(N, p)``.

The training forward (:func:`shared_pass`, :func:`response_hidden_states`) fills the cache once per prompt
(``copies=1``) and then runs the responses after it, in a few passes over rows of similar length
(:func:`length_buckets`), each over its rows' own columns up to their longest response: a batch padded to its
longest response then mostly pays for its real tokens. It concatenates the outputs into the hidden states
``(N, L, H)`` of a plain pass (0 after each response's end); gradients flow back through the cache rows each
pass selects.
The hf rollout engine keeps the prompt KV unrepeated instead (:mod:`medrlvr.rollout.cascade`): decoding
reads it once per step for all samples, which a training forward, running every response token at once, does
not need.

Positions skip padding (:func:`position_ids`), so every row sees the positions of a plain left-padded pass.
The training forward may also start from the cached output of frozen layers (:func:`layer_slice`), on a
model under a peft wrapper (:func:`unwrap`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, DynamicCache, StaticCache

from medrlvr.models.transformers_api import cache_argument

Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Cache], torch.Tensor]
"""``run(inputs, attention_mask, position_ids, cache)``: the model on a column slice of ``inputs`` (token ids or
embeddings) after the tokens already in ``cache``; ``attention_mask`` covers both."""


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under any peft wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


@contextlib.contextmanager
def layer_slice(decoder: nn.Module, start: int, stop: int | None = None) -> Iterator[None]:
    """Temporarily keep only ``decoder.layers[start:stop]``, e.g. to begin a pass from cached hidden states.

    The kept layers are renumbered from 0 meanwhile, so that a KV cache built during the slice is a
    well-formed cache of the slice (attention masks read the cache length from layer 0).
    """
    layers = decoder.layers
    kept = list(layers)[start:stop]
    attentions = [layer.self_attn for layer in kept if hasattr(getattr(layer, "self_attn", None), "layer_idx")]
    numbers = [attention.layer_idx for attention in attentions]
    decoder.layers = nn.ModuleList(kept)
    for index, attention in enumerate(attentions):
        attention.layer_idx = index
    try:
        yield
    finally:
        decoder.layers = layers
        for attention, number in zip(attentions, numbers):
            attention.layer_idx = number


@contextlib.contextmanager
def layer_outputs(decoder: nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """Within the block, the list receives the output of ``decoder.layers[layer]`` at each forward pass."""
    outputs: list[torch.Tensor] = []
    hook = decoder.layers[layer].register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        hook.remove()


@dataclass(frozen=True)
class PromptSharing:
    """How rows share prompt tokens: the first ``shared`` columns are the same in every row, and consecutive
    groups of ``group_size`` rows (samples of one prompt) have the same first ``prompt_length`` columns.

    Passes then run the shared columns once, each group's prompt once, and only the responses per row.
    """

    prompt_length: int = 0
    shared: int = 0
    group_size: int = 1

    @staticmethod
    def detect(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, group_size: int = 1
    ) -> PromptSharing:
        """The sharing of a batch whose rows are ``prompt_length`` prompt tokens then a response.

        Raises ValueError when the rows do not come in groups of ``group_size`` with equal prompts.
        """
        if prompt_length == 0:
            return PromptSharing()
        prompts = torch.stack([input_ids[:, :prompt_length], attention_mask[:, :prompt_length].to(input_ids.dtype)])
        firsts = prompts[:, ::group_size]
        if group_size > 1 and not torch.equal(prompts, firsts.repeat_interleave(group_size, 1)):
            raise ValueError(f"rows do not come in groups of {group_size} sharing their first {prompt_length} tokens")
        same = (prompts == prompts[:, :1]).all(dim=0).all(dim=0)
        differing = (~same).nonzero()
        shared = int(differing[0]) if len(differing) else prompt_length
        return PromptSharing(prompt_length, min(shared, prompt_length - 1), group_size)


def _repeat_rows(cache: Cache, rows: int, repeats: int, device: torch.device) -> None:
    """Repeat each of the ``rows`` rows of ``cache`` ``repeats`` times, in place.

    A static cache's layers have no ``batch_repeat_interleave``, so its rows are re-indexed (the same values).
    One repeat leaves the cache as it is (no copy).
    """
    if repeats == 1:
        return
    if isinstance(cache, StaticCache):
        cache.reorder_cache(torch.arange(rows, device=device).repeat_interleave(repeats))
    else:
        cache.batch_repeat_interleave(repeats)


def prefill_prompts(
    run: Run,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor,
    positions: torch.Tensor,
    shared: int,
    copies: int,
    cache: Cache,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Fill ``cache`` with the KV of ``prompts`` (one row per prompt), for ``copies`` rows per prompt.

    The first ``shared`` columns (the same in every row) run once, the rest once per prompt. Returns the
    outputs of the two passes, ``(1, shared, ...)`` and ``(prompts, width - shared, ...)`` (None for a pass
    with no columns).
    """
    rows, width, device = prompts.shape[0], prompts.shape[1], prompts.device
    prefix = rest = None
    if shared:
        prefix = run(prompts[:1, :shared], prompt_mask[:1, :shared], positions[:1, :shared], cache)
        _repeat_rows(cache, 1, rows, device)
    if width > shared:
        rest = run(prompts[:, shared:], prompt_mask, positions[:, shared:], cache)
    _repeat_rows(cache, rows, copies, device)
    return prefix, rest


def shared_pass(run: Run, inputs: torch.Tensor, attention_mask: torch.Tensor, sharing: PromptSharing) -> torch.Tensor:
    """Hidden states ``(N, L, H)`` of ``run`` over all rows, running shared prompt columns once through a KV cache
    and the responses in passes over rows of similar length (0 after each row's last real token)."""
    rows, length, group = inputs.shape[0], sharing.prompt_length, sharing.group_size
    positions = position_ids(attention_mask)
    cache = DynamicCache()
    firsts = slice(None, None, group)
    prompt_rows = inputs[firsts, :length], attention_mask[firsts, :length], positions[firsts, :length]
    prefix, prompts = prefill_prompts(run, *prompt_rows, sharing.shared, 1, cache)
    parts = [] if prefix is None else [prefix.expand(rows, -1, -1)]
    parts.append(prompts.repeat_interleave(group, 0))
    if inputs.shape[1] > length:
        parts.append(_response_passes(run, inputs[:, length:], attention_mask, positions[:, length:], cache, group))
    return torch.cat(parts, dim=1)


def _response_passes(
    run: Run,
    responses: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    prompt_cache: DynamicCache,
    group: int,
) -> torch.Tensor:
    """Outputs of ``run`` over the response columns ``(N, T, ...)`` after ``prompt_cache`` (one row per group of
    ``group`` rows): one pass per :func:`length_buckets` bucket, over its rows' columns up to their longest real
    token (the mask's last 1), zeros after it."""
    columns = responses.shape[1]
    prompt_length = attention_mask.shape[1] - columns
    steps = torch.arange(1, columns + 1, device=attention_mask.device)
    lengths = (attention_mask[:, prompt_length:].bool() * steps).amax(dim=1).tolist()
    outputs, order = [], []
    for bucket in length_buckets(lengths):
        rows = torch.tensor(bucket, device=responses.device)
        width = max(1, lengths[bucket[0]])
        cache = DynamicCache([(keys[rows // group], values[rows // group], window) for keys, values, window in prompt_cache])
        out = run(responses[rows, :width], attention_mask[rows, : prompt_length + width], positions[rows, :width], cache)
        outputs.append(F.pad(out, (0, 0, 0, columns - width)))
        order.append(rows)
    return torch.cat(outputs)[torch.argsort(torch.cat(order))]


def length_buckets(lengths: list[int], pass_cost: int = 16) -> list[list[int]]:
    """Row indices in passes, each pass running its rows over their longest ``lengths``: of the splits of the rows
    sorted longest first, the one of least cost, a pass costing its rows × its length plus ``pass_cost`` (the fixed
    cost of one more pass in token columns; 16 is about that of the default model's 8 trained layers on a CPU)."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    longest_first = [lengths[row] for row in order]
    best, start = [0.0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for stop in range(1, len(order) + 1):  # best[stop]: least cost of the first ``stop`` rows
        for first in range(stop):
            cost = best[first] + (stop - first) * longest_first[first] + pass_cost
            if cost < best[stop]:
                best[stop], start[stop] = cost, first
    buckets, stop = [], len(order)
    while stop:
        buckets.append(order[start[stop] : stop])
        stop = start[stop]
    return buckets[::-1]


def response_hidden_states(
    trunk: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    frozen_hidden: torch.Tensor | None = None,
    frozen_layers: int = 0,
    sharing: PromptSharing | None = None,
) -> torch.Tensor:
    """Last hidden states at the positions that predict each response token: ``(B, T, H)``.

    With ``frozen_hidden`` (the input of layer ``frozen_layers``, from ``ActorCritic.frozen_prefix``),
    only the layers from ``frozen_layers`` on are run. With ``sharing``, shared prompt tokens run once
    (gradients flow through the shared KV cache), unless gradient checkpointing forbids the cache.
    """
    decoder = unwrap(trunk)
    inputs = input_ids if frozen_hidden is None else frozen_hidden
    key = "input_ids" if frozen_hidden is None else "inputs_embeds"
    checkpointing = getattr(decoder, "gradient_checkpointing", False) and decoder.training

    def run(part: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        return trunk(
            **{key: part}, attention_mask=mask, position_ids=positions, **cache_argument(cache), use_cache=cache is not None
        ).last_hidden_state

    with layer_slice(decoder, frozen_layers) if frozen_hidden is not None else contextlib.nullcontext():
        if sharing is None or sharing.prompt_length == 0 or checkpointing:
            hidden = run(inputs, attention_mask, position_ids(attention_mask), None)
        else:
            hidden = shared_pass(run, inputs, attention_mask, sharing)
    return hidden[:, -response_length - 1 : -1]
