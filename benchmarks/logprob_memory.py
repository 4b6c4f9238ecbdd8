"""Peak memory of the log-prob pass at Qwen2.5's vocabulary: the full-vocabulary computation against the chunked one.

    python benchmarks/logprob_memory.py                              # 2 sequences x 1,024 response tokens
    python benchmarks/logprob_memory.py --sequences 4 --chunk 512

The model is a Qwen2 architecture with Qwen2.5's vocabulary (151,936 tokens, tied embeddings) and a small
trunk (2 layers, hidden size 256), built from a config: the vocabulary projection, not the trunk, is what the
chunking changes. Each variant runs in its own process; the peak resident memory above the process's
memory just before the measured call (high-water mark reset through ``/proc/self/clear_refs``) is printed for

- a training step: forward with gradients, a PPO-like loss on the log-probs (plus an entropy term when
  asked), backward;
- the no-grad pass (old / reference log-probs).

``full`` is the earlier computation: fp32 logits of every response token, their ``log_softmax`` and, for
the entropy, its ``exp``, all kept for the backward pass. ``chunked`` is :func:`medrlvr.models.logprobs.token_logprobs`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from medrlvr.models.logprobs import token_logprobs

QWEN25_VOCAB = 151_936


def full_logprobs(hidden: torch.Tensor, head: torch.nn.Module, tokens: torch.Tensor, with_entropy: bool):
    """The full-vocabulary computation the chunked one replaced."""
    log_probs = torch.log_softmax(head(hidden).float(), dim=-1)
    logprobs = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1) if with_entropy else None
    return logprobs, entropy


def _rss_mib(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def _measure(run) -> tuple[float, float]:
    """(peak MiB above the current resident memory, seconds) of ``run()``."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start_rss, start = _rss_mib("VmRSS"), time.perf_counter()
    run()
    return _rss_mib("VmHWM") - start_rss, time.perf_counter() - start


def measure_variant(variant: str, sequences: int, response: int, chunk: int, entropy: bool) -> dict[str, float]:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=QWEN25_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    tokens = torch.randint(0, QWEN25_VOCAB, (sequences, response + 1))
    head, trunk = model.get_output_embeddings(), model.get_decoder()

    def logprobs(grad: bool):
        hidden = trunk(input_ids=tokens).last_hidden_state[:, :-1]
        targets = tokens[:, 1:]
        if variant == "full":
            return full_logprobs(hidden, head, targets, entropy and grad)
        mode = ("grad" if entropy else "detached") if grad else "none"
        return token_logprobs(hidden, head, targets, 1.0, chunk, mode)

    def train_step() -> None:
        lp, ent = logprobs(grad=True)
        loss = -(lp * torch.randn_like(lp)).mean() - (0.01 * ent.mean() if entropy else 0.0)
        loss.backward()

    def no_grad_pass() -> None:
        with torch.no_grad():
            logprobs(grad=False)

    no_grad_pass()  # warm-up: allocator and kernels
    model.zero_grad(set_to_none=True)
    no_grad_mib, no_grad_s = _measure(no_grad_pass)
    train_mib, train_s = _measure(train_step)
    return {"train_mib": train_mib, "train_s": train_s, "no_grad_mib": no_grad_mib, "no_grad_s": no_grad_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--response", type=int, default=1024, help="response tokens per sequence")
    parser.add_argument("--chunk", type=int, default=1024, help="model.logits_chunk_size for the chunked variant")
    parser.add_argument("--entropy", action="store_true", help="an entropy bonus in the loss (entropy_coef > 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=("full", "chunked"), help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args.sequences, args.response, args.chunk, args.entropy)))
        return
    results = {}
    for variant in ("full", "chunked"):
        command = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
    tokens = args.sequences * args.response
    print(
        f"vocabulary {QWEN25_VOCAB}, {args.sequences} x {args.response} response tokens, fp32, chunk {args.chunk} "
        f"tokens, entropy {'in the loss' if args.entropy else 'logged only'}; one fp32 vocabulary-sized tensor over "
        f"these tokens: {tokens * QWEN25_VOCAB * 4 / 2**20:,.0f} MiB"
    )
    print("| log-probs | training step peak MiB | s | no-grad pass peak MiB | s |")
    print("|---|---|---|---|---|")
    for variant, r in results.items():
        print(f"| {variant} | {r['train_mib']:,.0f} | {r['train_s']:.1f} | {r['no_grad_mib']:,.0f} | {r['no_grad_s']:.1f} |")


if __name__ == "__main__":
    main()
