"""Rollout speed of the hf and vllm backends side by side: same prompts, same sampling settings, same threads.

    python benchmarks/rollout_hf_vs_vllm.py                        # 8 bundled questions, the default prompt
    python benchmarks/rollout_hf_vs_vllm.py --samples 8 --max-new-tokens 128 --vllm-dtype bfloat16

Prompts are the bundled validation questions through the default prompt (``data.prompt``); sampling is the
default ``rollout`` group (4 samples, 64 new tokens, T 0.7, stop at ``</answer>``) unless overridden.
Each backend runs a short warm-up call, then the timed call. Prints per backend: engine start-up seconds,
completions, useful response tokens (through EOS or the stop string), seconds, tokens/s, and the mean
|log-prob difference| between the engine and a transformers forward pass (the trainer's view).
"""

from __future__ import annotations

import argparse
import time

import torch

from medrlvr.config import PromptConfig, RolloutConfig, VLLMConfig
from medrlvr.data.bundled import load_bundled
from medrlvr.models.prompt_sharing import response_hidden_states
from medrlvr.models.loading import BUNDLED_MODEL, load_causal_lm, load_tokenizer
from medrlvr.rollout.base import RolloutBatch, RolloutEngine, SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training.builders import build_prompt_builder


@torch.no_grad()
def logprob_gap(model: torch.nn.Module, batch: RolloutBatch, temperature: float) -> float:
    """Mean |engine log-prob − transformers log-prob| over the response tokens."""
    ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    hidden = response_hidden_states(model.get_decoder(), ids, mask, batch.response_ids.shape[1])
    logits = model.get_output_embeddings()(hidden).float() / temperature
    reference = torch.log_softmax(logits, -1).gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    return float(((batch.logprobs - reference).abs() * batch.response_mask).sum() / batch.response_mask.sum())


def measure(name: str, engine: RolloutEngine, start_s: float, prompts: list[str], params: SamplingParams, model) -> str:
    engine.generate(prompts[:1], SamplingParams(max_new_tokens=4, temperature=params.temperature, seed=0))
    start = time.perf_counter()
    batch = engine.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = batch.num_response_tokens
    gap = logprob_gap(model, batch, params.temperature)
    return f"| {name} | {start_s:.1f} | {len(batch.texts)} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {gap:.1e} |"


def main() -> None:
    defaults = RolloutConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=defaults.num_samples)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, shared by both backends")
    parser.add_argument("--vllm-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer(BUNDLED_MODEL)
    model = load_causal_lm(BUNDLED_MODEL, tokenizer)
    builder = build_prompt_builder(PromptConfig(), tokenizer)
    prompts = [builder(e) for e in load_bundled("validation")[: args.prompts]]
    params = SamplingParams(
        num_samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        stop_strings=tuple(defaults.stop_strings),
        seed=args.seed,
    )
    print(
        f"{args.prompts} prompts × {args.samples} samples, ≤ {args.max_new_tokens} new tokens, T {args.temperature}, "
        f"stop {list(params.stop_strings)}, {args.threads} torch threads; trainer/hf in float32",
        flush=True,
    )
    rows = ["| backend | start s | completions | response tokens | seconds | tokens/s | mean abs Δlogprob vs trainer |",
            "|---|---|---|---|---|---|---|"]
    rows.append(measure("hf (float32)", HFRolloutEngine(model, tokenizer, defaults.generation_batch_size), 0.0, prompts, params, model))
    print(rows[-1], flush=True)

    from medrlvr.rollout.vllm import VLLMRolloutEngine

    start = time.perf_counter()
    engine = VLLMRolloutEngine(model, tokenizer, VLLMConfig(dtype=args.vllm_dtype), seed=args.seed)
    rows.append(measure(f"vllm ({args.vllm_dtype})", engine, time.perf_counter() - start, prompts, params, model))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
