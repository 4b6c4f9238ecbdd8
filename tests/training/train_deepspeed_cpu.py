"""``python -m medrlvr.train`` under ``torchrun`` with Lightning's DeepSpeed strategy allowed on the CPU
(:mod:`cpu_deepspeed`); everything else is the training CLI as it is.

usage: torchrun --nproc_per_node N train_deepspeed_cpu.py [hydra overrides...]
"""

import os

from cpu_deepspeed import allow_deepspeed_on_cpu

from medrlvr import train
from medrlvr.training import run, strategies

run.build_strategy = lambda cfg: allow_deepspeed_on_cpu(
    strategies.build_strategy(cfg), int(os.environ["LOCAL_WORLD_SIZE"])
)

if __name__ == "__main__":
    train.main()
