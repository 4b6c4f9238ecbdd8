"""Rollouts from a transformers causal LM: batched, KV cache, prompt prefixes computed once.

Chat prompts share a long prefix (system prompt, worked example) and every prompt is sampled
``num_samples`` times. The engine runs the shared prefix once, each prompt once, and copies their KV
cache to the samples before decoding, so prefill work no longer grows with the batch. Decoding is the
engine's own loop over the model's forward (transformers' warpers, stop-string check and cache): rows
that finished leave the batch and the cache, which ``generate`` keeps decoding until the longest row ends.
"""

from __future__ import annotations

import torch
from transformers import (
    Cache,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StaticCache,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from medrlvr.models.prompt_sharing import position_ids, prefill_prompts
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
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> RolloutBatch:
        """Sample completions, at most ``batch_size`` sequences per ``generate`` call."""
        device = next(self.model.parameters()).device
        token_lists = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        unique_ids, unique_mask, shared = pad_after_common_prefix(token_lists, self.tokenizer.pad_token_id)
        if self.synced_gpus:  # the same number of forward passes on every process: no separate prefix pass
            shared = 0
        unique_ids, unique_mask = unique_ids.to(device), unique_mask.to(device)
        samples = params.num_samples
        prompts_per_call = max(1, self.batch_size // samples)
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            chunks = [
                self._generate_chunk(
                    unique_ids[i : i + prompts_per_call], unique_mask[i : i + prompts_per_call], shared, params
                )
                for i in range(0, len(prompts), prompts_per_call)
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
            prompt_ids=unique_ids.repeat_interleave(samples, 0),
            prompt_mask=unique_mask.repeat_interleave(samples, 0),
            response_ids=response_ids,
            response_mask=response_mask,
            logprobs=logprobs * response_mask,
            texts=texts,
            finish_reasons=finish_reasons,
            prompt_index=[i for i in range(len(prompts)) for _ in range(samples)],
        )

    def _prompt_cache(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, shared: int, copies: int, max_new_tokens: int
    ) -> StaticCache:
        """KV cache of every prompt token but the last, for ``copies`` samples of each prompt.

        The first ``shared`` tokens (identical in every row) run once, the rest once per prompt
        (:func:`~medrlvr.models.prompt_sharing.prefill_prompts`). The cache is allocated once at its final
        length: a growing cache copies itself at every step, which took most of the decoding time on a CPU.
        """
        cache = StaticCache(config=self.model.config, max_cache_len=prompt_ids.shape[1] - 1 + max_new_tokens)

        def run(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Cache) -> torch.Tensor:
            return self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits

        last = prompt_ids.shape[1] - 1
        positions = position_ids(prompt_mask)
        prefill_prompts(run, prompt_ids[:, :last], prompt_mask[:, :last], positions[:, :last], shared, copies, cache)
        return cache

    def _generate_chunk(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, shared: int, params: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``num_samples`` completions of each prompt: token ids and their log-probs, ``(rows, steps)``.

        Rows that finished (EOS or a stop string) leave the batch and its KV cache once a quarter of the
        batch has finished, so later steps only pay for rows still decoding (not under ``synced_gpus``, where
        every process runs every step). Sampling draws exponential noise for every row of the chunk at every
        step, finished ones included, which on a CPU is how ``torch.multinomial`` samples one token: the tokens
        are those of transformers' ``generate`` for the same seed.
        """
        samples, steps, width = params.num_samples, params.max_new_tokens, prompt_ids.shape[1]
        rows, device, pad = prompt_ids.shape[0] * samples, prompt_ids.device, self.tokenizer.pad_token_id
        cache = self._prompt_cache(prompt_ids, prompt_mask, shared, samples, steps)
        sequences = torch.full((rows, width + steps), pad, dtype=prompt_ids.dtype, device=device)
        sequences[:, :width] = prompt_ids.repeat_interleave(samples, 0)
        mask = torch.cat([prompt_mask.repeat_interleave(samples, 0), prompt_mask.new_ones(rows, steps)], dim=1)
        logprobs = torch.zeros(rows, steps, device=device)
        slots = torch.arange(rows, device=device)  # the row each cache slot holds
        running = torch.ones(rows, dtype=torch.bool, device=device)  # per slot
        positions = mask[:, :width].sum(-1, keepdim=True) - 1
        greedy = params.temperature <= 0
        temperature = 1.0 if greedy else params.temperature
        warpers = None if greedy else _warpers(params)
        stop = self._stop_criterion(params.stop_strings)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        decoded = 0
        for step in range(steps):
            end = width + step
            logits = self.model(
                input_ids=sequences[slots, end - 1 : end],
                attention_mask=mask[slots, :end],
                position_ids=positions,
                cache=cache,
                use_cache=True,
            ).logits[:, -1].float()
            if greedy:
                tokens = logits.argmax(-1)
            else:  # torch.multinomial(p, 1) is argmax(p / E) with E ~ Exp(1) drawn for every row of the chunk
                noise = torch.empty(rows, logits.shape[-1], device=device).exponential_()
                tokens = (torch.softmax(warpers(sequences[slots, :end], logits), -1) / noise[slots]).argmax(-1)
            step_logprobs = torch.log_softmax(logits / temperature, -1).gather(-1, tokens[:, None]).squeeze(-1)
            live = slots[running]
            logprobs[live, step] = step_logprobs[running]
            sequences[live, end] = tokens[running]
            finished = torch.isin(tokens, eos)
            if stop is not None:
                finished |= stop(sequences[slots, : end + 1], logits)
            running &= ~finished
            decoded = step + 1
            if not self._any_running(running):
                break
            positions = positions + 1
            if not self.synced_gpus and int(running.sum()) <= 3 * len(running) // 4:
                keep = running.nonzero().squeeze(1)
                cache.reorder_cache(keep)
                slots, running, positions = slots[keep], running[keep], positions[keep]
        return sequences[:, width : width + decoded], logprobs[:, :decoded]

    def _stop_criterion(self, stop_strings: tuple[str, ...]) -> StopStringCriteria | None:
        """transformers' stop-string check for ``stop_strings``, built once per engine (it preprocesses the vocabulary)."""
        if not stop_strings:
            return None
        if stop_strings not in self._stop_criteria:
            self._stop_criteria[stop_strings] = StopStringCriteria(self.tokenizer, list(stop_strings))
        return self._stop_criteria[stop_strings]

    def _any_running(self, running: torch.Tensor) -> bool:
        """Whether any row still decodes, on any process when ``synced_gpus`` (all then run the same steps)."""
        flag = running.any().to(torch.int64)
        if self.synced_gpus and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag)
        return bool(flag)

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


def pad_after_common_prefix(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows ``[common prefix][padding][rest of the prompt]`` of equal width, their mask and the prefix length.

    The common prefix stops one token short of the shortest prompt, so every row keeps its own last
    token; with no common prefix this is plain left padding.
    """
    shortest = min(len(ids) for ids in token_lists)
    shared = 0
    while shared < shortest - 1 and all(ids[shared] == token_lists[0][shared] for ids in token_lists):
        shared += 1
    width = max(len(ids) for ids in token_lists)
    rows, masks = [], []
    for ids in token_lists:
        padding = width - len(ids)
        rows.append(ids[:shared] + [pad_id] * padding + ids[shared:])
        masks.append([1] * shared + [0] * padding + [1] * (len(ids) - shared))
    return torch.tensor(rows), torch.tensor(masks), shared


def _pad_right(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)


def _warpers(params: SamplingParams) -> LogitsProcessorList:
    """The sampling warpers ``generate`` applies for these settings, in its order: temperature, top-k, top-p."""
    warpers = LogitsProcessorList()
    if params.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k != 0:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(params.top_p))
    return warpers
