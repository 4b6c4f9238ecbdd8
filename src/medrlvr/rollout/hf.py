"""Rollouts with transformers' ``generate``: batched, KV cache, left padding."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from medrlvr.rollout.base import RolloutBatch, SamplingParams


class HFRolloutEngine:
    """Generates from a transformers causal LM, usually the very module being trained (colocated).

    ``synced_gpus``: every process keeps decoding until all have finished, as DeepSpeed ZeRO-3 needs (each
    forward pass gathers the partitioned weights collectively).
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64, synced_gpus: bool = False
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> RolloutBatch:
        """Sample completions, ``batch_size`` sequences per ``generate`` call."""
        repeated = [p for p in prompts for _ in range(params.num_samples)]
        prompt_index = [i for i in range(len(prompts)) for _ in range(params.num_samples)]
        encoded = self.tokenizer(repeated, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            chunks = [
                self._generate_chunk(prompt_ids[i : i + self.batch_size], prompt_mask[i : i + self.batch_size], params)
                for i in range(0, len(repeated), self.batch_size)
            ]
        self.model.train(was_training)
        width = max(c[0].shape[1] for c in chunks)
        pad = self.tokenizer.pad_token_id
        response_ids = torch.cat([_pad_right(c[0], width, pad) for c in chunks])
        logprobs = torch.cat([_pad_right(c[1], width, 0.0) for c in chunks])
        response_mask, finish_reasons = self._response_mask(response_ids, params)
        response_ids = torch.where(response_mask.bool(), response_ids, pad)
        texts = self.tokenizer.batch_decode(response_ids, skip_special_tokens=True)
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            logprobs=logprobs * response_mask,
            texts=texts,
            finish_reasons=finish_reasons,
            prompt_index=prompt_index,
        )

    def _generate_chunk(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        greedy = params.temperature <= 0
        output = self.model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=params.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else params.top_k,
            stop_strings=list(params.stop_strings) or None,
            tokenizer=self.tokenizer if params.stop_strings else None,
            pad_token_id=self.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            synced_gpus=self.synced_gpus,
        )
        response_ids = output.sequences[:, prompt_ids.shape[1] :]
        logits = torch.stack(output.logits, dim=1).float()
        if not greedy:
            logits = logits / params.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        return response_ids, logprobs

    def _response_mask(self, response_ids: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, list[str]]:
        """Mask through the first EOS or the token that completes a stop string; name why each row ended."""
        mask = torch.zeros_like(response_ids)
        reasons = []
        for row, ids in enumerate(response_ids.tolist()):
            length, reason = len(ids), "length"
            for position, token in enumerate(ids):
                if token in self.eos_ids:
                    length, reason = position + 1, "stop"
                    break
            stop_at = self._stop_string_end(ids[:length], params.stop_strings)
            if stop_at is not None:
                length, reason = stop_at, "stop"
            mask[row, :length] = 1
            reasons.append(reason)
        return mask, reasons

    def _stop_string_end(self, ids: list[int], stop_strings: tuple[str, ...]) -> int | None:
        """Smallest prefix length whose text contains a stop string, or None."""
        if not stop_strings or not any(s in self.tokenizer.decode(ids) for s in stop_strings):
            return None
        low, high = 1, len(ids)
        while low < high:
            middle = (low + high) // 2
            if any(s in self.tokenizer.decode(ids[:middle]) for s in stop_strings):
                high = middle
            else:
                low = middle + 1
        return low

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Copy ``policy``'s parameters in place; nothing to do when the engine generates from ``policy`` itself."""
        if policy is self.model:
            return
        source = dict(policy.named_parameters())
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name not in source:
                    raise KeyError(f"policy has no parameter {name!r} to push into the rollout engine")
                param.copy_(source[name])


def _pad_right(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)
