"""Time one checkpoint save (and the verified load) for a model config; print seconds and MB per save.

    python benchmarks/checkpoint_overhead.py                  # default model (SmolLM2-135M, LoRA top 8 layers)
    python benchmarks/checkpoint_overhead.py experiment=smoke # the tiny model, full fine-tuning

Builds the model and the optimizer exactly as training does, takes one optimizer step so AdamW has its
moment buffers, then saves ``--repeats`` times into a temporary folder and reports the median.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.training import builders
from medrlvr.training.checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint


def main(overrides: list[str], repeats: int = 3) -> None:
    torch.set_num_threads(1)
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose("config", overrides=overrides))
    tokenizer = builders.build_tokenizer(cfg.model)
    model = builders.build_actor_critic(cfg.model, tokenizer, cfg.seed)
    params = model.actor_parameters() + model.critic_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    root = Path(tempfile.mkdtemp(prefix="medrlvr-ckpt-"))
    save_times, load_times = [], []
    for iteration in range(1, repeats + 1):
        start = time.perf_counter()
        path = save_checkpoint(root, iteration, model, optimizer, run_id=None, keep=1)
        save_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_checkpoint(latest_checkpoint(root), model, optimizer)
        load_times.append(time.perf_counter() - start)
    megabytes = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    trainable = sum(p.numel() for p in params)
    print(f"model {cfg.model.name_or_path} (lora_rank={cfg.model.lora_rank}, critic={cfg.model.critic}): "
          f"{trainable / 1e6:.2f} M trainable parameters")
    print(f"save {statistics.median(save_times):.3f} s | verify+load {statistics.median(load_times):.3f} s | "
          f"{megabytes:.1f} MB per checkpoint ({', '.join(f'{f.name} {f.stat().st_size / 1e6:.1f}' for f in sorted(path.iterdir()))})")


if __name__ == "__main__":
    main(sys.argv[1:])
