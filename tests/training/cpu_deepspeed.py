"""Let Lightning's ``DeepSpeedStrategy`` run on the CPU, for the test scripts started under ``torchrun``.

It accepts only CUDA devices. Two things change and nothing else: its accelerator check is skipped (the
parent strategy's ``setup_environment`` runs instead), and its CPU devices get an index (``cpu:<local rank>``:
DeepSpeed reads the device index as the local rank).
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy


def allow_deepspeed_on_cpu(strategy: Strategy | str, local_world_size: int) -> Strategy | str:
    DeepSpeedStrategy.setup_environment = DDPStrategy.setup_environment
    if isinstance(strategy, DeepSpeedStrategy):
        strategy.parallel_devices = [torch.device("cpu", index) for index in range(local_world_size)]
    return strategy
