"""Log-probabilities of chosen tokens without materialising the whole vocabulary at once.

A full-vocabulary fp32 ``log_softmax`` over every response token (and its ``exp`` for the entropy), kept for
the backward pass, is the largest tensor of a PPO step on a large-vocabulary model: 16 sequences × 1,024
tokens × 151,936 (Qwen2.5) × 4 bytes is about 10 GB, per copy. Here the output layer runs over chunks of
``chunk_size`` tokens; the chosen token's log-prob is ``logit − logsumexp(logits)``; logits stay in the
model's dtype until that reduction, which upcasts one chunk at a time. Under gradients, when there is
more than one chunk, each chunk is recomputed in the backward pass (``torch.utils.checkpoint``), so at
most one chunk's logits are alive at any time. Given a response mask, only the masked positions go through
the output layer: a batch padded to its longest response then pays for its real tokens only.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

EntropyMode = Literal["none", "detached", "grad"]


def _chunk_stats(
    hidden: torch.Tensor, tokens: torch.Tensor, head: nn.Module, temperature: float, entropy: EntropyMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``tokens`` ``(C,)`` and entropy ``(C,)`` (zeros when not asked for) from ``hidden`` ``(C, H)``."""
    scaled = head(hidden).float()
    if temperature != 1.0:
        scaled = scaled / temperature  # rebinding frees the unscaled copy
    normaliser = torch.logsumexp(scaled, dim=-1)
    logprobs = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - normaliser
    if entropy == "none":
        return logprobs, torch.zeros_like(logprobs)
    if entropy == "grad":
        return logprobs, normaliser - (torch.softmax(scaled, dim=-1) * scaled).sum(-1)
    with torch.no_grad():  # H = logsumexp(z) - sum softmax(z) * z, with one temporary
        probs = (scaled - normaliser.unsqueeze(-1)).exp_()
        return logprobs, normaliser.detach() - probs.mul_(scaled).sum(-1)


def token_logprobs(
    hidden: torch.Tensor,
    head: nn.Module,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    entropy: EntropyMode = "none",
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of ``tokens`` ``(B, T)`` under ``softmax(head(hidden) / temperature)``, ``hidden`` ``(B, T, H)``.

    Returns ``(logprobs, entropy)``, both ``(B, T)`` in fp32; ``entropy`` is None for ``"none"``, carries no
    gradient for ``"detached"`` (logging) and is differentiable for ``"grad"`` (an entropy bonus). With
    ``mask`` ``(B, T)``, positions where it is 0 skip the output layer: their log-prob and entropy are 0.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, length, width = hidden.shape
    flat_hidden, flat_tokens = hidden.reshape(-1, width), tokens.reshape(-1)
    kept = None if mask is None else mask.reshape(-1).nonzero().squeeze(1)
    if kept is not None:
        flat_hidden, flat_tokens = flat_hidden[kept], flat_tokens[kept]
    stats = partial(_chunk_stats, head=head, temperature=max(temperature, 1e-6), entropy=entropy)
    recompute = torch.is_grad_enabled() and flat_hidden.shape[0] > chunk_size
    parts = [
        checkpoint(stats, h, t, use_reentrant=False) if recompute else stats(h, t)
        for h, t in zip(flat_hidden.split(chunk_size), flat_tokens.split(chunk_size))
    ]

    def to_positions(values: list[torch.Tensor]) -> torch.Tensor:
        flat = torch.cat(values)
        if kept is not None:
            flat = flat.new_zeros(batch * length).index_copy(0, kept, flat)
        return flat.view(batch, length)

    logprobs = to_positions([p[0] for p in parts])
    if entropy == "none":
        return logprobs, None
    return logprobs, to_positions([p[1] for p in parts])
