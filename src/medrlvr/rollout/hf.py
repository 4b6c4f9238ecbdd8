"""Rollouts from a transformers causal LM: batched, prompt KV computed and stored once, finished rows dropped.

Chat prompts share a long prefix (system prompt, worked example) and every prompt is sampled
``num_samples`` times. The engine runs the shared prefix once and each prompt once; the samples then attend
to that KV where it lies (:mod:`medrlvr.rollout.cascade`), so neither prefill work nor the KV read per
decoding step grows with the samples. Decoding is the engine's own loop over the model's forward
(transformers' warpers and stop-string check, linear layers from weights packed for a few rows:
:mod:`medrlvr.rollout.decoding_linears`): rows that finished leave the batch, which ``generate`` keeps
decoding until the longest row ends. Tokens are drawn by inverse-CDF sampling, one uniform number per row.

Asked to (``capture_layer``), the engine keeps the hidden states entering one decoder layer at every position
it runs: with LoRA on the top layers only, those are the frozen layers' output, which training then takes
from the rollout instead of running the frozen layers again over prompt and response.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import (
    Cache,
    DynamicCache,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from medrlvr.models.prompt_sharing import layer_outputs, position_ids, prefill_prompts, unwrap
from medrlvr.models.transformers_api import cache_argument
from medrlvr.rollout.base import RolloutBatch, SamplingParams
from medrlvr.rollout.cascade import CascadeKV, cascade_attention_in
from medrlvr.rollout.decoding_linears import decoding_linears


class HFRolloutEngine:
    """Generates from a transformers causal LM, usually the very module being trained (colocated).

    ``synced_gpus``: every process keeps decoding until all have finished, as DeepSpeed ZeRO-3 needs (each
    forward pass gathers the partitioned weights collectively). ``capture_layer`` (> 0): every batch carries
    the inputs of that decoder layer (:attr:`RolloutBatch.layer_inputs`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        synced_gpus: bool = False,
        capture_layer: int = 0,
    ) -> None:
        layers = model.config.num_hidden_layers
        if not 0 <= capture_layer < layers:
            raise ValueError(f"capture_layer must be in [0, {layers}) for a model of {layers} layers, got {capture_layer}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        self.capture_layer = capture_layer
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
        with (
            torch.random.fork_rng(devices=[]),
            # one packed copy of the weights for every chunk (they do not change during the call)
            decoding_linears(self.model, max_rows=prompts_per_call * samples, fixed_weights=not self.synced_gpus),
        ):
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
        layer_inputs = None
        if self.capture_layer:  # prompt columns but the last, then one column per decoding step and the last response token
            columns = unique_ids.shape[1] + width
            layer_inputs = torch.cat([torch.nn.functional.pad(c[2], (0, 0, 0, columns - c[2].shape[1])) for c in chunks])
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
            layer_inputs=layer_inputs,
            layer_inputs_of=self.capture_layer,
        )

    @contextlib.contextmanager
    def _layer_inputs(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, the list receives the input of layer ``capture_layer`` ``(rows, columns, H)`` of each
        forward pass; an empty list that stays empty when nothing is captured."""
        if not self.capture_layer:
            yield []
            return
        with layer_outputs(unwrap(self.model).get_decoder(), self.capture_layer - 1) as captured:
            yield captured

    def _prompt_kv(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, shared: int, samples: int, max_new_tokens: int
    ) -> tuple[CascadeKV, torch.Tensor | None]:
        """KV of every prompt token but the last, once per prompt, with room for ``max_new_tokens`` per sample,
        and with ``capture_layer`` the inputs of that layer at those tokens, ``(prompts, width - 1, H)``.

        The first ``shared`` tokens (identical in every row) run once, the rest once per prompt after them; the
        samples of a prompt read its KV where it is (:class:`~medrlvr.rollout.cascade.CascadeKV`), never a copy.
        """
        cache = DynamicCache()
        last = prompt_ids.shape[1] - 1
        positions = position_ids(prompt_mask)

        def run(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Cache) -> torch.Tensor:
            return self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, **cache_argument(cache), use_cache=True,
                logits_to_keep=1
            ).logits

        with self._layer_inputs() as captured:
            prefill_prompts(run, prompt_ids[:, :last], prompt_mask[:, :last], positions[:, :last], shared, 1, cache)
        kv = CascadeKV.from_prompt_cache(cache, shared, prompt_mask[:, :last], samples, max_new_tokens, self.model.config)
        if not captured:
            return kv, None
        if shared:  # the prefix pass ran one row for all prompts
            captured[0] = captured[0].expand(prompt_ids.shape[0], -1, -1)
        return kv, torch.cat(captured, dim=1)

    def _generate_chunk(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, shared: int, params: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Decode ``num_samples`` completions of each prompt: token ids and their log-probs, ``(rows, steps)``, and
        with ``capture_layer`` that layer's inputs ``(rows, width - 1 + steps, H)`` (0 where a row had ended).

        Rows that finished (EOS or a stop string) leave the batch and the row block of the KV cache once a
        quarter of the batch has finished, so later steps only pay for rows still decoding (not under
        ``synced_gpus``, where every process runs every step). Each step draws one uniform number for every
        row of the chunk, finished ones included, so a row's tokens do not depend on when others finish.
        """
        samples, steps, width = params.num_samples, params.max_new_tokens, prompt_ids.shape[1]
        rows, device, pad = prompt_ids.shape[0] * samples, prompt_ids.device, self.tokenizer.pad_token_id
        kv, prompt_inputs = self._prompt_kv(prompt_ids, prompt_mask, shared, samples, steps)
        step_inputs = None if prompt_inputs is None else prompt_inputs.new_zeros(rows, steps, prompt_inputs.shape[-1])
        sequences = torch.full((rows, width + steps), pad, dtype=prompt_ids.dtype, device=device)
        sequences[:, :width] = prompt_ids.repeat_interleave(samples, 0)
        logprobs = torch.zeros(rows, steps, device=device)
        running = torch.ones(rows, dtype=torch.bool, device=device)  # per live slot
        positions = prompt_mask.sum(-1, keepdim=True).repeat_interleave(samples, 0) - 1
        greedy = params.temperature <= 0
        temperature = 1.0 if greedy else params.temperature
        warpers = None if greedy else _warpers(params)
        stop = self._stop_criterion(params.stop_strings)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        decoded = 0
        with (
            cascade_attention_in(unwrap(self.model)),
            self._layer_inputs() as captured,
        ):
            for step in range(steps):
                end, slots = width + step, kv.slots
                logits = self._next_token_logits(sequences[slots, end - 1 : end], positions, kv)
                kv.advance()
                if step_inputs is not None:
                    step_inputs[slots, step] = captured.pop()[:, -1]
                if greedy:
                    tokens = logits.argmax(-1)
                else:
                    uniforms = 1.0 - torch.rand(rows, device=device)  # in (0, 1], one per row of the chunk
                    tokens = sample_inverse_cdf(torch.softmax(warpers(sequences[slots, :end], logits), -1), uniforms[slots])
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
                    kv.keep(keep)
                    running, positions = running[keep], positions[keep]
        inputs = None
        if prompt_inputs is not None:
            inputs = torch.cat([prompt_inputs.repeat_interleave(samples, 0), step_inputs[:, :decoded]], dim=1)
        return sequences[:, width : width + decoded], logprobs[:, :decoded], inputs

    def _next_token_logits(self, input_ids: torch.Tensor, positions: torch.Tensor, kv: CascadeKV) -> torch.Tensor:
        """fp32 logits ``(n, vocab)`` of the token after ``input_ids`` ``(n, 1)``, attending through ``kv``."""
        logits = self.model(input_ids=input_ids, position_ids=positions, use_cache=False, cascade=kv).logits
        return logits[:, -1].float()

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


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` ``(n, vocab)`` (any non-negative weights): the first token whose cumulative
    weight reaches ``uniforms`` ``(n,)``, in (0, 1], times the row's total. Zero-weight tokens are never drawn."""
    cumulative = probs.double().cumsum(-1)
    targets = uniforms.double() * cumulative[:, -1]
    return torch.searchsorted(cumulative, targets[:, None]).squeeze(-1).clamp_max(probs.shape[-1] - 1)

