"""The rollout interface: prompts and sampling settings in, token ids, texts and log-probs out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    import lightning as L


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``num_samples`` completions per prompt; ``temperature=0`` means greedy decoding."""

    num_samples: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class RolloutBatch:
    """Completions of one call; row ``i`` answers prompt ``prompt_index[i]`` (prompts × ``num_samples`` rows).

    ``prompt_ids``/``prompt_mask``: ``(N, P)``, each prompt ending at column ``P - 1`` (padding, mask 0, sits
    before the prompt or after a prefix all prompts share); ``response_ids``/``response_mask``: ``(N, T)``
    right-padded, mask 1 on generated tokens (up to and including EOS or the token completing a stop
    string); ``logprobs``: ``(N, T)`` log-probs of the sampled tokens under the rollout policy at the
    sampling temperature (0 on padding); ``finish_reasons``: ``"stop"`` or ``"length"``.

    ``layer_inputs``: ``(N, P + T, H)``, the hidden states entering decoder layer ``layer_inputs_of`` at each
    position of prompt + response, when the engine was asked to keep them (the hf backend's
    ``capture_layer``), else None. Positions the engine never ran are 0: the last response column and
    the columns after a row ended; no output at a real position depends on them.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    texts: list[str]
    finish_reasons: list[str]
    prompt_index: list[int]
    layer_inputs: torch.Tensor | None = None
    layer_inputs_of: int = 0

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())

    def to(self, device: torch.device | str) -> RolloutBatch:
        """The same batch with its tensors on ``device``."""
        tensors = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "layer_inputs")
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors if getattr(self, name) is not None})


class RolloutEngine(Protocol):
    """A generation backend (``hf`` or ``vllm``) colocated with the trained policy."""

    def generate(self, prompts: list[str], params: SamplingParams) -> RolloutBatch:
        """Sample ``params.num_samples`` completions for each prompt (prompts are already templated text)."""
        ...

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Make the engine generate from ``policy``'s current weights."""
        ...


EngineBuilder = Callable[[torch.nn.Module, "L.Trainer"], RolloutEngine]
"""Builds the rollout engine of a policy once fit has started; the Trainer gives the process's ranks."""
