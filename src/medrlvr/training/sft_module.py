"""Supervised fine-tuning as a LightningModule: one ``training_step`` is one optimizer step.

The SFT baseline of the study: the same policy, prompts, data and evaluation as PPO, trained with
cross-entropy on the response tokens of a target ``<think>rationale</think><answer>X</answer>`` (see
:mod:`medrlvr.data.targets`). The prompt (which ends with the pre-filled response prefix, e.g. ``<think>``)
is context only: its tokens get no loss. Mirrors :class:`~medrlvr.training.ppo_module.PPOModule`: manual
optimisation, ``last_metrics``/``last_samples`` after each step, metrics logged at step = iteration.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import lightning as L
import torch
from transformers import PreTrainedTokenizerBase

from medrlvr.config import SFTConfig
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import ExampleBatch
from medrlvr.data.targets import sft_target
from medrlvr.models.actor_critic import response_hidden_states, unwrap
from medrlvr.models.logprobs import token_logprobs
from medrlvr.rollout.base import EngineBuilder, RolloutEngine
from medrlvr.training.strategies import clip_and_step


def encode_sft_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, response_ids, response_mask)`` laid out as in PPO's experience:
    each row is its prompt, left-padded to the longest prompt, then its response and EOS, right-padded to the
    longest response; ``response_ids`` ``(B, T)`` are the last ``T`` columns. Prompt and response are
    tokenized separately, as at generation time (the prompt alone is encoded, the response is generated
    after it)."""
    pad = tokenizer.pad_token_id
    prompt_rows = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    response_rows = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    prompt_width = max(map(len, prompt_rows))
    response_width = max(map(len, response_rows))
    input_ids, attention_mask, response_mask = [], [], []
    for prompt_ids, response_ids in zip(prompt_rows, response_rows):
        left, right = prompt_width - len(prompt_ids), response_width - len(response_ids)
        input_ids.append([pad] * left + prompt_ids + response_ids + [pad] * right)
        attention_mask.append([0] * left + [1] * (len(prompt_ids) + len(response_ids)) + [0] * right)
        response_mask.append([1] * len(response_ids) + [0] * right)
    input_ids_tensor = torch.tensor(input_ids)
    return input_ids_tensor, torch.tensor(attention_mask), input_ids_tensor[:, prompt_width:], torch.tensor(response_mask)


def sft_loss(
    policy: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    logits_chunk_size: int = 1024,
) -> torch.Tensor:
    """Mean cross-entropy over the response tokens (the reduction of a ``labels=`` forward with the prompt
    and padding ignored). Output-layer logits are computed at the response positions only, in chunks of
    ``logits_chunk_size`` tokens (:func:`token_logprobs`): over the whole sequence they took most of the
    memory of an SFT step (``(B, L, vocabulary)`` floats, kept for backward)."""
    model = unwrap(policy)
    hidden = response_hidden_states(model.get_decoder(), input_ids, attention_mask, response_ids.shape[1])
    logprobs, _ = token_logprobs(hidden, model.get_output_embeddings(), response_ids, chunk_size=logits_chunk_size)
    mask = response_mask.to(logprobs.dtype)
    return -(logprobs * mask).sum() / mask.sum()


class SFTModule(L.LightningModule):
    """Owns the policy (optionally LoRA-wrapped) and the rollout engine that generates from it (given, or built
    by ``build_engine`` when fit starts)."""

    def __init__(
        self,
        policy: torch.nn.Module,
        engine: RolloutEngine | None,
        prompt_builder: PromptBuilder,
        tokenizer: PreTrainedTokenizerBase,
        algo: SFTConfig,
        logits_chunk_size: int = 1024,
        build_engine: EngineBuilder | None = None,
    ) -> None:
        super().__init__()
        if engine is None and build_engine is None:
            raise ValueError("SFTModule needs an engine or build_engine")
        self.automatic_optimization = False
        self.logits_chunk_size = logits_chunk_size
        self.policy = policy
        self.engine = engine
        self._build_engine = build_engine
        self.prompt_builder = prompt_builder
        self.tokenizer = tokenizer
        self.algo = algo
        self.last_metrics: dict[str, float] = {}
        self.last_samples: list[dict[str, Any]] = []

    def on_fit_start(self) -> None:
        """Build the rollout engine once every process exists and the strategy has set up their process group."""
        if self.engine is None:
            self.engine = self._build_engine(self.policy, self.trainer)  # type: ignore[misc]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.algo.lr, weight_decay=self.algo.weight_decay)

    def transfer_batch_to_device(self, batch: ExampleBatch, device: torch.device, dataloader_idx: int) -> ExampleBatch:
        """Batches are questions (text); tensors are made on the right device later."""
        return batch

    def targets(self, batch: ExampleBatch) -> list[str]:
        """The full target response of each question (including the pre-filled prefix)."""
        return [sft_target(example, self.algo.rationale, self.algo.rationale_field) for example in batch]

    def training_step(self, batch: ExampleBatch, batch_idx: int) -> None:
        iteration = self.iteration = batch_idx + 1
        start = time.perf_counter()
        targets = self.targets(batch)
        prefix = self.prompt_builder.response_prefix
        responses = [t[len(prefix) :] if t.startswith(prefix) else t for t in targets]
        input_ids, attention_mask, response_ids, response_mask = (
            t.to(self.device) for t in encode_sft_batch(self.tokenizer, [self.prompt_builder(e) for e in batch], responses)
        )
        optimizer = self.optimizers()
        self.policy.train()
        loss = sft_loss(self.policy, input_ids, attention_mask, response_ids, response_mask, self.logits_chunk_size)
        optimizer.zero_grad()
        self.manual_backward(loss)
        parameters = [p for p in self.policy.parameters() if p.requires_grad]
        (grad_norm,), _ = clip_and_step(self, optimizer, [parameters], self.algo.max_grad_norm)
        self.engine.sync_weights(self.policy)
        elapsed = time.perf_counter() - start
        tokens = int(response_mask.sum())
        self.last_metrics = {
            "loss/sft": loss.item(),
            "loss/grad_norm": float(grad_norm),
            "response/tokens_mean": tokens / len(batch),
            "perf/train_tokens_per_s": int(attention_mask.sum()) / max(elapsed, 1e-9),
            "perf/iteration_s": elapsed,
        }
        self.last_samples = [
            {"iteration": iteration, "id": e.id, "question": e.question, "options": e.options, "answer": e.answer, "response": t}
            for e, t in zip(batch, targets)
        ]
        if self.logger is not None:
            self.logger.log_metrics(self.last_metrics, step=iteration)

    def merged_policy(self) -> torch.nn.Module:
        """The policy as a plain transformers model (LoRA merged into a copy), ready for ``save_pretrained``."""
        if hasattr(self.policy, "merge_and_unload"):
            return copy.deepcopy(self.policy).merge_and_unload()
        return self.policy

    def lora_policy(self) -> torch.nn.Module | None:
        """The policy with its LoRA adapters (a peft model), or None when the whole model trains."""
        return self.policy if hasattr(self.policy, "merge_and_unload") else None
