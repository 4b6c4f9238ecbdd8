"""Actor, critic and reference built from one causal LM.

- actor: the causal LM, fully trainable or with LoRA adapters (``peft``);
- reference: the frozen initial policy — the LoRA base with adapters disabled, or a frozen copy;
- critic: an LM trunk plus a scalar value head, initialised from the policy. ``separate`` gives the
  critic its own trunk (the study's PPO); ``shared`` puts the value head on the actor's trunk, which
  halves the forward passes on a CPU; ``none`` builds no critic (GRPO, RLOO, REINFORCE++).

Only response positions go through the LM head, which saves most of the vocabulary projection (given the
response mask, only the real response tokens, not the padding after shorter responses), and they go through
it in chunks of ``logits_chunk_size`` tokens (:mod:`medrlvr.models.logprobs`). Prompt tokens that
several rows share run once (:mod:`medrlvr.models.prompt_sharing`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers import Cache

from medrlvr.models.logprobs import EntropyMode, token_logprobs
from medrlvr.models.prompt_sharing import (
    PromptSharing,
    layer_outputs,
    layer_slice,
    position_ids,
    response_hidden_states,
    shared_pass,
    unwrap,
)
from medrlvr.models.transformers_api import cache_argument, enable_activation_checkpointing

CriticMode = Literal["separate", "shared", "none"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters on the listed modules; ``rank=0`` trains the full model instead.

    ``top_layers=N`` adapts only the last N transformer layers: backward passes then stop there, which
    cuts update time and activation memory on a CPU (0 = every layer).
    """

    rank: int = 0
    top_layers: int = 0
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ForwardOutput:
    """Per response token: ``logprobs`` of the given tokens, ``values`` (or None), ``entropy`` (or None); ``(B, T)``."""

    logprobs: torch.Tensor
    values: torch.Tensor | None
    entropy: torch.Tensor | None


def _with_lora(model: nn.Module, lora: LoraSettings, num_layers: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    layers = list(range(max(0, num_layers - lora.top_layers), num_layers)) if lora.top_layers else None
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
    )
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning since 5.x)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def with_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    """``model`` with LoRA adapters as ``lora`` says; ``model`` itself when ``lora.rank`` is 0."""
    return _with_lora(model, lora, model.config.num_hidden_layers) if lora.rank > 0 else model


@contextlib.contextmanager
def _writable(params: list[nn.Parameter]) -> Iterator[None]:
    """Make parameters created under DeepSpeed ZeRO-3's ``zero.Init`` (partitioned: empty on every process)
    whole for the block, keeping what rank 0 writes; a no-op for ordinary parameters."""
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        yield


class ValueHead(nn.Module):
    """Scalar value per position, initialised at zero so the first values are 0."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        with _writable(list(self.linear.parameters())):
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


class ActorCritic(nn.Module):
    """Owns the actor, the critic and access to the reference; one module so one optimizer sees all.

    ``load_copy`` returns a fresh copy of ``causal_lm`` for the separate critic's trunk and the reference
    (default: a deep copy; under DeepSpeed ZeRO-3 a second load, as partitioned parameters cannot be
    deep-copied).
    """

    def __init__(
        self,
        causal_lm: nn.Module,
        lora: LoraSettings = LoraSettings(),
        critic_mode: CriticMode = "separate",
        gradient_checkpointing: bool = False,
        load_copy: Callable[[], nn.Module] | None = None,
        data_dependent_passes: bool = True,
        logits_chunk_size: int = 1024,
    ) -> None:
        super().__init__()
        self.logits_chunk_size = logits_chunk_size
        # Shared prompt passes and an output layer over the real response tokens only run a data-dependent
        # number of forwards; ZeRO-3 needs the same count on every process, so it turns them off.
        self.data_dependent_passes = data_dependent_passes
        if critic_mode not in ("separate", "shared", "none"):
            raise ValueError(f"model.critic must be 'separate', 'shared' or 'none', got {critic_mode!r}")
        self.critic_mode = critic_mode
        self.uses_lora = lora.rank > 0
        load_copy = load_copy or (lambda: copy.deepcopy(causal_lm))
        critic_trunk = load_copy().get_decoder() if critic_mode == "separate" else None
        self.reference = None if self.uses_lora else _frozen(load_copy())
        num_layers = causal_lm.config.num_hidden_layers
        self.actor = _with_lora(causal_lm, lora, num_layers) if self.uses_lora else causal_lm
        if critic_trunk is not None and self.uses_lora:
            critic_trunk = _with_lora(critic_trunk, lora, num_layers)
        self.critic_trunk = critic_trunk
        self.value_head = None if critic_mode == "none" else ValueHead(causal_lm.config.hidden_size)
        self.frozen_layers = num_layers - lora.top_layers if self.uses_lora and 0 < lora.top_layers < num_layers else 0
        if gradient_checkpointing:
            for module in (self.actor, self.critic_trunk):
                if module is not None:
                    enable_activation_checkpointing(unwrap(module))
                    if self.uses_lora:
                        unwrap(module).enable_input_require_grads()

    def actor_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.actor.parameters() if p.requires_grad]

    @property
    def has_critic(self) -> bool:
        return self.value_head is not None

    def critic_parameters(self) -> list[nn.Parameter]:
        """Trainable critic parameters (empty without a critic)."""
        if self.value_head is None:
            return []
        trunk = [] if self.critic_trunk is None else [p for p in self.critic_trunk.parameters() if p.requires_grad]
        return trunk + list(self.value_head.parameters())

    @contextlib.contextmanager
    def _reference_mode(self) -> Iterator[nn.Module]:
        if self.uses_lora:
            with self.actor.disable_adapter():
                yield self.actor
        else:
            yield self.reference

    @torch.no_grad()
    def frozen_prefix(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sharing: PromptSharing | None = None
    ) -> torch.Tensor | None:
        """Hidden states entering the first layer with trainable parameters, or None if every layer trains.

        With LoRA on the top layers only, the layers below are shared by actor, reference and critic and
        never change: computing them once per iteration and passing the result as ``frozen_hidden`` to
        :meth:`policy_forward` and :meth:`critic_values` gives the same outputs for less work. With
        ``sharing``, prompt tokens shared by several rows run once.
        """
        if self.frozen_layers == 0:
            return None
        decoder = unwrap(self.actor).get_decoder()

        def run(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Cache | None) -> torch.Tensor:
            return self._run_frozen(decoder, ids, mask, positions, cache)

        if sharing is None or sharing.prompt_length == 0 or not self.data_dependent_passes:
            return run(input_ids, attention_mask, position_ids(attention_mask), None)
        return shared_pass(run, input_ids, attention_mask, sharing)

    def _run_frozen(
        self,
        decoder: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> torch.Tensor:
        """Output of the last frozen layer for ``input_ids`` (after any tokens already in ``cache``)."""
        with layer_outputs(decoder, self.frozen_layers - 1) as captured, layer_slice(decoder, 0, self.frozen_layers):
            decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_argument(cache),
                use_cache=cache is not None,
            )
        return captured[0]

    def policy_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_ids: torch.Tensor,
        temperature: float = 1.0,
        with_values: bool = False,
        entropy: EntropyMode = "none",
        reference: bool = False,
        frozen_hidden: torch.Tensor | None = None,
        sharing: PromptSharing | None = None,
        response_mask: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Log-probs of ``response_ids`` (the last ``T`` tokens of ``input_ids``) under the actor or the reference.

        With ``with_values`` and a shared critic, the values come from the same pass; without a critic
        ``with_values`` is an error. ``entropy``: ``"none"``, ``"detached"`` (for logging) or ``"grad"``.
        With ``response_mask`` ``(B, T)``, log-probs and entropy are computed at its real tokens only and
        are 0 elsewhere.
        """
        context = self._reference_mode() if reference else contextlib.nullcontext(self.actor)
        length = response_ids.shape[1]
        sharing = sharing if self.data_dependent_passes else None
        response_mask = response_mask if self.data_dependent_passes else None
        with context as model:
            lm = unwrap(model)
            hidden = response_hidden_states(
                lm.get_decoder(), input_ids, attention_mask, length, frozen_hidden, self.frozen_layers, sharing
            )
            logprobs, token_entropy = token_logprobs(
                hidden, lm.get_output_embeddings(), response_ids, temperature, self.logits_chunk_size, entropy,
                response_mask,
            )
        values = None
        if with_values:
            if self.critic_mode == "shared":
                values = self.value_head(hidden)
            else:
                values = self.critic_values(input_ids, attention_mask, length, frozen_hidden, sharing)
        return ForwardOutput(logprobs=logprobs, values=values, entropy=token_entropy)

    def critic_values(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_length: int,
        frozen_hidden: torch.Tensor | None = None,
        sharing: PromptSharing | None = None,
    ) -> torch.Tensor:
        """Values ``(B, T)`` of the states before each response token."""
        if self.value_head is None:
            raise ValueError("this model was built without a critic (model.critic: none)")
        trunk = self.critic_trunk if self.critic_trunk is not None else unwrap(self.actor).get_decoder()
        sharing = sharing if self.data_dependent_passes else None
        hidden = response_hidden_states(
            trunk, input_ids, attention_mask, response_length, frozen_hidden, self.frozen_layers, sharing
        )
        return self.value_head(hidden)


def _frozen(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    model.eval()
    return model
