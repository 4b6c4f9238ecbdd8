"""Zero-shot format and accuracy of the base model under prompt variants, side by side.

    python benchmarks/prompt_probe.py --prompts 16 --samples 4 --temperature 0.7

Prints, per variant: prompt tokens, strict-format rate, accuracy, mean response tokens and generation time.
"""

from __future__ import annotations

import argparse
import time

import torch

from medrlvr.data.bundled import load_bundled
from medrlvr.data.prompts import FORMAT_REMINDER, R1_SYSTEM_PROMPT, PromptBuilder
from medrlvr.models.loading import BUNDLED_MODEL, load_causal_lm, load_tokenizer
from medrlvr.rewards.functions import CorrectnessReward
from medrlvr.rollout.base import SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine

VARIANTS = {
    "r1 system + example + reminder": dict(system_prompt=R1_SYSTEM_PROMPT, one_shot=True, reminder=FORMAT_REMINDER),
    "r1 system + reminder": dict(system_prompt=R1_SYSTEM_PROMPT, one_shot=False, reminder=FORMAT_REMINDER),
    "model system + example + reminder": dict(system_prompt="", one_shot=True, reminder=FORMAT_REMINDER),
    "model system + reminder": dict(system_prompt="", one_shot=False, reminder=FORMAT_REMINDER),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    engine = HFRolloutEngine(load_causal_lm(BUNDLED_MODEL, tokenizer), tokenizer)
    examples = load_bundled("validation")[: args.prompts]
    params = SamplingParams(args.samples, args.max_new_tokens, args.temperature, stop_strings=("</answer>",), seed=0)
    print("| variant | prompt tokens | format | accuracy | response tokens | seconds |\n|---|---|---|---|---|---|")
    for name, settings in VARIANTS.items():
        builder = PromptBuilder(tokenizer, **settings)
        prompts = [builder(e) for e in examples]
        start = time.perf_counter()
        out = engine.generate(prompts, params)
        seconds = time.perf_counter() - start
        rows = [examples[i] for i in out.prompt_index]
        scored = CorrectnessReward()([builder.full_response(t) for t in out.texts], [e.answer for e in rows], [e.letters for e in rows])
        n = len(rows)
        prompt_tokens = sum(len(tokenizer(p).input_ids) for p in prompts) / len(prompts)
        print(
            f"| {name} | {prompt_tokens:.0f} | {sum(p.format_ok for p in scored.parsed) / n:.2f} | "
            f"{sum(scored.correct) / n:.2f} | {out.response_mask.sum(1).float().mean():.1f} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
