"""SFT step: the project's response-only loss against the usual whole-sequence ``labels=`` forward, side by side.

    python benchmarks/sft_step.py                    # default model and SFT batch (8 bundled questions)
    python benchmarks/sft_step.py --steps 5 experiment=smoke_sft

Each loss runs in its own process (so peak RSS is its own): the same policy, batch and AdamW steps; it prints
seconds per step (median), peak RSS and the loss of the first step (equal up to rounding).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.registry import load_split
from medrlvr.data.targets import sft_target
from medrlvr.training import builders
from medrlvr.training.sft_module import encode_sft_batch, sft_loss

METHODS = ("response_only", "whole_sequence")


def whole_sequence_loss(policy: torch.nn.Module, prompts: list[str], responses: list[str], tokenizer) -> torch.Tensor:
    """The usual SFT loss: right-padded rows, prompt and padding labelled -100, logits at every position."""
    rows = []
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    return policy(input_ids=input_ids, attention_mask=mask, labels=labels).loss


def measure(method: str, steps: int, overrides: list[str]) -> dict[str, float]:
    torch.set_num_threads(1)
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose("config", overrides=["algo=sft", *overrides]))
    tokenizer = builders.build_tokenizer(cfg.model)
    policy = builders.build_policy(cfg.model, tokenizer, cfg.seed)
    prompt_builder = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    examples = load_split(cfg.data, cfg.data.train_split, cfg.seed)[: cfg.algo.batch_size or cfg.data.batch_size]
    prompts = [prompt_builder(e) for e in examples]
    prefix = prompt_builder.response_prefix
    responses = [sft_target(e, cfg.algo.rationale, cfg.algo.rationale_field).removeprefix(prefix) for e in examples]
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.algo.lr)
    policy.train()
    times, losses = [], []
    for _ in range(steps):
        start = time.perf_counter()
        if method == "response_only":
            loss = sft_loss(policy, *encode_sft_batch(tokenizer, prompts, responses))
        else:
            loss = whole_sequence_loss(policy, prompts, responses, tokenizer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {
        "s_per_step": statistics.median(times[1:] or times),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "first_loss": losses[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--method", choices=METHODS, help="measure one method in this process (internal)")
    args, overrides = parser.parse_known_args()
    if args.method:
        print(json.dumps(measure(args.method, args.steps, overrides)))
        return
    results = {}
    for method in METHODS:
        command = [sys.executable, __file__, "--method", method, "--steps", str(args.steps), *overrides]
        results[method] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"{'loss':<16}{'s/step':>10}{'peak RSS GiB':>14}{'first loss':>14}")
    for method, r in results.items():
        print(f"{method:<16}{r['s_per_step']:>10.2f}{r['peak_rss_gib']:>14.2f}{r['first_loss']:>14.6f}")


if __name__ == "__main__":
    main()
