"""The memory plan's activation and logit model against measured peak memory on this CPU.

For each case (model, micro-batch, prompt and response length) a fresh process builds the run's ActorCritic
as training does, then measures the peak RSS increase of (1) the no-grad log-prob and value passes of
``make_experience`` over the micro-batch and (2) one PPO forward/backward of it through the module's own
``_loss``. Large allocations are served by ``mmap`` (``mallopt``), so freed tensors leave the RSS at once and
the high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) follows live tensors. The plan's
prediction for the same setting: no-grad pass + no-grad logits + experience for (1); activations + logits +
backward working set + gradients for (2).

    python benchmarks/memory_plan_check.py                 # the default cases, one torch thread
    python benchmarks/memory_plan_check.py --cases tiny:8:64:256
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_CASES = [
    "tiny:4:64:64",
    "tiny:8:64:256",
    "smollm2:2:128:64",
    "smollm2:8:128:128",
    "smollm2:4:128:128:ckpt",
]
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def peak_increase(run) -> tuple[int, object]:
    """Peak RSS above the RSS before ``run()``, and its result."""
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_status()["VmRSS"]
    result = run()
    return memory_status()["VmHWM"] - before, result


def measure(case: str) -> dict:
    """One case in this process: ``model:micro:prompt:response[:ckpt]``."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    import torch
    from hydra import compose, initialize_config_dir

    from medrlvr.config import register_configs, to_train_config
    from medrlvr.paths import config_dir
    from medrlvr.models.configs import load_model_config
    from medrlvr.plan.memory import DTYPE_BYTES, Workload, experience_item, no_grad_items, update_items
    from medrlvr.plan.sizes import Skeleton
    from medrlvr.rollout.base import RolloutBatch
    from medrlvr.training import builders
    from medrlvr.training.experience import make_experience
    from medrlvr.training.ppo_module import PPOModule

    torch.set_num_threads(1)
    name, micro, prompt, response, *flags = case.split(":")
    micro, prompt, response = int(micro), int(prompt), int(response)
    overrides = [f"model={name}", f"model.gradient_checkpointing={'ckpt' in flags}", f"algo.mini_batch_size={micro}"]
    overrides += [f"data.batch_size={micro}", "rollout.num_samples=1", f"rollout.max_new_tokens={response}"]
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose("config", overrides))
    tokenizer = builders.build_tokenizer(cfg.model)
    model = builders.build_actor_critic(cfg.model, tokenizer, cfg.seed)
    module = PPOModule(model, object(), None, None, cfg.algo, cfg.rollout, cfg.seed)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    vocab = model.actor.config.vocab_size
    rollout = RolloutBatch(
        prompt_ids=torch.randint(vocab, (micro, prompt), generator=generator),
        prompt_mask=torch.ones(micro, prompt, dtype=torch.long),
        response_ids=torch.randint(vocab, (micro, response), generator=generator),
        response_mask=torch.ones(micro, response, dtype=torch.long),
        logprobs=torch.zeros(micro, response),
        texts=[""] * micro,
        finish_reasons=["length"] * micro,
        prompt_index=list(range(micro)),
    )
    algo = cfg.algo

    def experience():
        return make_experience(
            model, rollout, torch.zeros(micro), temperature=cfg.rollout.temperature, kl_coef=algo.kl_coef,
            kl_estimator=algo.kl_estimator, advantage_estimator=algo.advantage_estimator, gamma=algo.gamma,
            lam=algo.lam, group_eps=algo.group_eps, whiten_advantages=algo.whiten_advantages,
            forward_batch_size=micro,
        )

    def update(batch) -> None:
        model.zero_grad(set_to_none=True)
        loss, _ = module._loss(batch)
        loss.backward()

    model.train()
    batch = experience()
    update(batch)  # warm-up: lazy initialisation outside the measurement
    model.zero_grad(set_to_none=True)
    no_grad_measured, batch = peak_increase(experience)
    update_measured, _ = peak_increase(lambda: update(batch))

    config, _ = load_model_config(cfg.model.name_or_path)
    skeleton = Skeleton(config, builders.lora_settings(cfg.model), getattr(torch, cfg.model.dtype))
    sizes = skeleton.sizes()
    work = Workload(micro, prompt, response)
    trainable = sum(p.numel() for p in model.actor_parameters() + model.critic_parameters())
    gradients = trainable * DTYPE_BYTES[cfg.model.dtype]
    no_grad = no_grad_items(cfg, skeleton, sizes, work, micro) + [experience_item(cfg, sizes, work)]
    updated = update_items(cfg, skeleton, sizes, work, micro)
    return {
        "case": case,
        "no_grad": {"predicted": sum(i.bytes for i in no_grad), "measured": no_grad_measured},
        "update": {"predicted": sum(i.bytes for i in updated) + gradients, "measured": update_measured},
        "items": {i.name: i.bytes for i in no_grad + updated} | {"gradients": gradients},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="model:micro:prompt:response[:ckpt]")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case)))
        return
    mib = 2**20
    print("| case (model:micro:prompt:response) | pass | predicted MiB | measured MiB | predicted / measured |")
    print("| --- | --- | ---: | ---: | ---: |")
    for case in args.cases:
        output = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, check=True)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        for phase in ("no_grad", "update"):
            predicted, measured = result[phase]["predicted"], result[phase]["measured"]
            print(f"| {case} | {phase} | {predicted / mib:.0f} | {measured / mib:.0f} | {predicted / measured:.2f} |")
        print(f"<!-- {case}: " + ", ".join(f"{k} {v / mib:.0f}" for k, v in result["items"].items()) + " -->", file=sys.stderr)


if __name__ == "__main__":
    main()
