"""A few PPO iterations of the tiny model through Lightning's DDP or DeepSpeed strategy on the CPU, run by the
tests under ``torchrun``; each process writes what it saw to ``OUT_DIR/rank<R>.json``.

Lightning's ``DeepSpeedStrategy`` is let onto the CPU by :mod:`cpu_deepspeed`; the strategy object, the
DeepSpeed config, the precision plugin, ``configure_model`` under ``deepspeed.zero.Init``, DeepSpeed's backward
and step, and the module's PPO iteration are the real ones.

usage: torchrun --nproc_per_node N strategy_run.py OUT_DIR TRAINER_OPTION [hydra overrides...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

import lightning as L  # noqa: E402
from cpu_deepspeed import allow_deepspeed_on_cpu  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from medrlvr.config import register_configs, to_train_config  # noqa: E402
from medrlvr.paths import config_dir  # noqa: E402
from medrlvr.data.registry import load_split  # noqa: E402
from medrlvr.training.prompt_batches import prompt_loader  # noqa: E402
from medrlvr.training import builders  # noqa: E402
from medrlvr.training.distributed import close_process_group  # noqa: E402
from medrlvr.training.strategies import build_strategy, gathered_parameters, zero3  # noqa: E402


def checksums(module, gather: bool) -> dict[str, float]:
    """Sum and absolute sum of actor, critic and reference parameters (gathered first under ZeRO-3)."""
    model = module.model
    with gathered_parameters(model, gather):
        groups = {
            "actor": model.actor_parameters(),
            "critic": model.critic_parameters(),
            "reference": list(model.reference.parameters()),
        }
        return {
            f"{name}/{kind}": float(sum(f(p.detach().double()).sum() for p in params))
            for name, params in groups.items()
            for kind, f in (("sum", lambda t: t), ("abs", torch.abs))
        }


class Recorder(L.Callback):
    def __init__(self, gather: bool) -> None:
        self.gather = gather
        self.record: dict = {"prompts": [], "metrics": []}

    def on_train_start(self, trainer, module) -> None:
        self.record["start"] = checksums(module, self.gather)
        optimizer = module.optimizers().optimizer
        groups = getattr(optimizer, "optimizer", optimizer).param_groups
        self.record["optimizer_params"] = sum(p.numel() for g in groups for p in g["params"])
        self.record["lrs"] = sorted(g["lr"] for g in groups)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.record["prompts"].append([e.id for e in batch])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.record["metrics"].append(module.last_metrics)

    def on_train_end(self, trainer, module) -> None:
        self.record["end"] = checksums(module, self.gather)


def main(out_dir: Path, option: str, overrides: list[str]) -> None:
    register_configs()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        dict_cfg = compose(
            config_name="config",
            overrides=[
                "experiment=smoke", f"trainer={option}", "trainer.accelerator=cpu", f"trainer.devices={world}",
                "trainer.precision=32-true", "trainer.num_threads=1", "model.gradient_checkpointing=false", *overrides,
            ],
        )
    cfg = to_train_config(dict_cfg)
    L.seed_everything(cfg.seed)
    tokenizer = builders.build_tokenizer(cfg.model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    module, _ = builders.build_module(cfg, tokenizer, prompts)
    recorder = Recorder(gather=zero3(cfg.trainer))
    strategy = allow_deepspeed_on_cpu(build_strategy(cfg), world)
    trainer = L.Trainer(
        accelerator="cpu", devices=world, strategy=strategy, precision=cfg.trainer.precision, max_epochs=1,
        logger=False, callbacks=[recorder], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(out_dir),
    )
    examples = load_split(cfg.data, cfg.data.train_split, cfg.seed)
    loader = prompt_loader(
        examples, cfg.data.batch_size, cfg.trainer.max_steps, cfg.seed, 0, trainer.global_rank, trainer.world_size
    )
    trainer.fit(module, loader)
    recorder.record.update(
        strategy=type(trainer.strategy).__name__,
        precision_plugin=type(trainer.precision_plugin).__name__,
        deepspeed_config=getattr(trainer.strategy, "config", None),
        deepspeed_optimizer_steps=getattr(trainer.strategy.model, "global_steps", None),
        configured_lrs=sorted([cfg.algo.actor_lr, cfg.algo.critic_lr]),
        world_size=trainer.world_size,
    )
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(recorder.record, default=str))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
    finally:
        close_process_group()
