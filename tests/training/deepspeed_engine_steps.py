"""Optimizer steps of the project's actor+critic parameter groups in DeepSpeed's own engine, with the DeepSpeed
config the project generates, run by the tests under ``torchrun`` (gloo, CPU). Rank 0 writes ``OUT``: the
loss at every step and each process's parameter checksums.

fp32 (``trainer.precision=32-true``) unless overridden: this CPU gains nothing from bf16, which the tests run
once. The client optimizer is ``torch.optim.AdamW``, what the PPO module hands to DeepSpeed on GPUs too
(DeepSpeed's own CPU Adam would be compiled first, for minutes).

usage: torchrun --nproc_per_node N deepspeed_engine_steps.py OUT STAGE [hydra overrides...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

import deepspeed  # noqa: E402
import torch.distributed as dist  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from medrlvr.algo import core  # noqa: E402
from medrlvr.config import register_configs, to_train_config  # noqa: E402
from medrlvr.paths import config_dir  # noqa: E402
from medrlvr.training import builders  # noqa: E402
from medrlvr.training.distributed import close_process_group  # noqa: E402
from medrlvr.training.ppo_module import parameter_groups  # noqa: E402
from medrlvr.training.strategies import deepspeed_config, micro_batch_size  # noqa: E402

STEPS = 4
PROMPT, RESPONSE, ROWS = 6, 5, 4


def checksum(params: list[torch.nn.Parameter], gather: bool) -> float:
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=gather):
        return float(sum(p.detach().double().sum() + p.detach().double().abs().sum() for p in params))


def main(out: Path, stage: int, overrides: list[str]) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        dict_cfg = compose(
            config_name="config",
            overrides=[
                "model=tiny", f"trainer=deepspeed_zero{stage}", "trainer.accelerator=cpu", "trainer.precision=32-true",
                "model.gradient_checkpointing=false", "algo.actor_lr=1e-3", "algo.critic_lr=1e-3", *overrides,
            ],
        )
    cfg = to_train_config(dict_cfg)
    tokenizer = builders.build_tokenizer(cfg.model)
    model = builders.build_actor_critic(cfg.model, tokenizer, cfg.seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.algo), weight_decay=cfg.algo.weight_decay)
    config = deepspeed_config(cfg.trainer, cfg.algo.max_grad_norm, micro_batch_size(cfg))
    engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    rank, world = dist.get_rank(), dist.get_world_size()

    # each process trains on its own rows, as each generates its own rollouts in a PPO iteration
    generator = torch.Generator().manual_seed(1000 + rank)
    input_ids = torch.randint(0, len(tokenizer), (ROWS, PROMPT + RESPONSE), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    response_ids = input_ids[:, PROMPT:]
    mask = torch.ones_like(response_ids, dtype=torch.float32)
    advantages = torch.randn(ROWS, RESPONSE, generator=generator)
    returns = torch.randn(ROWS, RESPONSE, generator=generator)
    with torch.no_grad():
        old = engine.module.policy_forward(input_ids, attention_mask, response_ids, with_values=True)
        reference = engine.module.policy_forward(input_ids, attention_mask, response_ids, reference=True)

    gather = stage == 3
    trainable = model.actor_parameters() + model.critic_parameters()
    start = {"trainable": checksum(trainable, gather), "reference": checksum(list(model.reference.parameters()), gather)}
    losses, grad_norms = [], []
    for _ in range(STEPS):
        output = engine.module.policy_forward(input_ids, attention_mask, response_ids, with_values=True)
        pg_loss, _ = core.policy_loss(output.logprobs, old.logprobs, advantages, mask, cfg.algo.clip_range)
        vf_loss, _ = core.value_loss(output.values, old.values, returns, mask, cfg.algo.value_clip_range)
        loss = pg_loss + cfg.algo.value_loss_coef * vf_loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
        grad_norms.append(float(engine.get_global_grad_norm()))
    end = {"trainable": checksum(trainable, gather), "reference": checksum(list(model.reference.parameters()), gather)}
    per_rank: list = [None] * world
    dist.all_gather_object(per_rank, {"rank": rank, "start": start, "end": end, "losses": losses})
    if rank == 0:
        inner = ds_optimizer.optimizer if hasattr(ds_optimizer, "optimizer") else ds_optimizer
        out.write_text(json.dumps({
            "world_size": world,
            "stage": config["zero_optimization"]["stage"],
            "offload_optimizer": "offload_optimizer" in config["zero_optimization"],
            "bf16": config["bf16"]["enabled"],
            "ranks": per_rank,
            "grad_norms": grad_norms,
            "reference_kl_at_start": float((old.logprobs - reference.logprobs).abs().max()),
            "optimizer_group_lrs": [g["lr"] for g in inner.param_groups],
            "trainable_numel": sum(p.numel() if not hasattr(p, "ds_numel") else p.ds_numel for p in trainable),
        }))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
    finally:
        close_process_group()
