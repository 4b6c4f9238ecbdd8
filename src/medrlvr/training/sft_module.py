"""Supervised fine-tuning as a LightningModule: one ``training_step`` is one optimizer step.

The SFT baseline of the study: the same policy, prompts, data and evaluation as PPO, trained with
cross-entropy on the response tokens of a target ``<think>rationale</think><answer>X</answer>`` (see
:mod:`medrlvr.data.targets`). The prompt (which ends with the pre-filled response prefix, e.g. ``<think>``)
is context only: its tokens get no loss. Shares :class:`~medrlvr.training.policy_module.PolicyModule` with
:class:`~medrlvr.training.ppo_module.PPOModule`: a step with a non-finite loss or gradient is skipped and counted,
metrics are logged at step = iteration, and checkpoints resume it.
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedTokenizerBase, get_constant_schedule

from medrlvr.config import SFTConfig
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import ExampleBatch
from medrlvr.data.targets import sft_target
from medrlvr.models.prompt_sharing import response_hidden_states, unwrap
from medrlvr.models.logprobs import token_logprobs
from medrlvr.rollout.base import EngineBuilder, RolloutEngine
from medrlvr.training.numerics import NumericsGuard
from medrlvr.training.policy_module import PolicyModule
from medrlvr.training.strategies import begin_micro_batch, deepspeed_engine


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
    and padding ignored). Output-layer logits are computed at the real response tokens only, in chunks of
    ``logits_chunk_size`` tokens (:func:`token_logprobs`): over the whole sequence they took most of the
    memory of an SFT step (``(B, L, vocabulary)`` floats, kept for backward)."""
    model = unwrap(policy)
    hidden = response_hidden_states(model.get_decoder(), input_ids, attention_mask, response_ids.shape[1])
    logprobs, _ = token_logprobs(
        hidden, model.get_output_embeddings(), response_ids, chunk_size=logits_chunk_size, mask=response_mask
    )
    mask = response_mask.to(logprobs.dtype)
    return -(logprobs * mask).sum() / mask.sum()


class SFTModule(PolicyModule):
    """Owns the policy (optionally LoRA-wrapped) and the rollout engine that generates from it (given, or built
    by ``build_engine`` when fit starts). One ``training_step`` is one optimizer step, at a constant learning
    rate."""

    def __init__(
        self,
        policy: torch.nn.Module,
        engine: RolloutEngine | None,
        prompt_builder: PromptBuilder,
        tokenizer: PreTrainedTokenizerBase,
        algo: SFTConfig,
        logits_chunk_size: int = 1024,
        build_engine: EngineBuilder | None = None,
        guard: NumericsGuard | None = None,
        first_iteration: int = 0,
    ) -> None:
        super().__init__(engine, build_engine, guard, first_iteration)
        self.logits_chunk_size = logits_chunk_size
        self.policy = policy
        self.prompt_builder = prompt_builder
        self.tokenizer = tokenizer
        self.algo = algo

    @property
    def model(self) -> torch.nn.Module:
        """The policy, under the name checkpoints save and load the trained module by."""
        return self.policy

    def rollout_policy(self) -> torch.nn.Module:
        """The policy."""
        return self.policy

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The policy's parameters with ``requires_grad`` (the LoRA adapters, or every weight)."""
        return [p for p in self.policy.parameters() if p.requires_grad]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; a constant schedule in ``self.scheduler`` (saved in checkpoints)."""
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=self.algo.lr, weight_decay=self.algo.weight_decay)
        self.scheduler = get_constant_schedule(optimizer)
        return optimizer

    def targets(self, batch: ExampleBatch) -> list[str]:
        """The full target response of each question (including the pre-filled prefix)."""
        return [sft_target(example, self.algo.rationale, self.algo.rationale_field) for example in batch]

    def training_step(self, batch: ExampleBatch, batch_idx: int) -> None:
        iteration = self.iteration = self.first_iteration + batch_idx + 1
        start = time.perf_counter()
        targets = self.targets(batch)
        prefix = self.prompt_builder.response_prefix
        responses = [t[len(prefix) :] if t.startswith(prefix) else t for t in targets]
        input_ids, attention_mask, response_ids, response_mask = (
            t.to(self.device) for t in encode_sft_batch(self.tokenizer, [self.prompt_builder(e) for e in batch], responses)
        )
        self.policy.train()
        self.optimizers().zero_grad()
        begin_micro_batch(deepspeed_engine(self))
        loss = sft_loss(self.policy, input_ids, attention_mask, response_ids, response_mask, self.logits_chunk_size)
        norms, problems = None, ["loss"]
        if not self.backward_unless_nonfinite(loss, 1.0, last=True):
            norms = self.step_optimizer([self.trainable_parameters()], self.algo.max_grad_norm)
            problems = [] if norms is not None else ["gradients"]
        self.engine.sync_weights(self.policy)  # type: ignore[union-attr]
        elapsed = time.perf_counter() - start
        tokens = int(response_mask.sum())
        self.last_metrics = {
            "response/tokens_mean": tokens / len(batch),
            "perf/train_tokens_per_s": int(attention_mask.sum()) / max(elapsed, 1e-9),
            "perf/iteration_s": elapsed,
        } | self.guard.record(iteration, problems)
        if norms is not None:
            self.last_metrics |= {"loss/sft": loss.item(), "loss/grad_norm": norms[0]}
        self.last_samples = [
            {"iteration": iteration, "id": e.id, "question": e.question, "options": e.options, "answer": e.answer, "response": t}
            for e, t in zip(batch, targets)
        ]
        if self.logger is not None:
            self.logger.log_metrics(self.last_metrics, step=iteration)
