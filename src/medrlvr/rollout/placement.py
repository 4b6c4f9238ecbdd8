"""Where a process's rollout engine runs when training uses several processes: its rank, local rank and
world size as the launcher gave them, the device it occupies and the offset of its seed.

In training the ranks come from the Lightning Trainer, i.e. from the cluster environment Lightning selected
for the launcher: torchrun's variables (``TorchElasticEnvironment``), SLURM's (``SLURMEnvironment``), or
those Lightning's own launcher gives the processes it starts (``LightningEnvironment``). Outside training an
engine takes torchrun's variables, or is a process of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medrlvr.config import ConfigError

if TYPE_CHECKING:
    import lightning as L


@dataclass(frozen=True)
class EnginePlacement:
    """One process's engine among ``world_size``; ``tensor_parallel_size`` consecutive ranks share one engine."""

    rank: int
    local_rank: int
    world_size: int
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"rank {self.rank} (local {self.local_rank}) is not a process of a world of {self.world_size}")
        if self.world_size % self.tensor_parallel_size:
            raise ConfigError(
                f"rollout.vllm.tensor_parallel_size={self.tensor_parallel_size} must divide the number of "
                f"processes ({self.world_size})"
            )

    @property
    def device_index(self) -> int:
        """The node-local device of this rank's engine (or shard): the one Lightning trains on (``cuda:<local rank>``)."""
        return self.local_rank

    @property
    def seed_offset(self) -> int:
        """Added to the engine's seed: the same within a tensor-parallel group (it samples as one engine),
        different from group to group."""
        return self.rank // self.tensor_parallel_size

    def environment(self) -> dict[str, str]:
        """The torchrun variables vLLM's ``external_launcher`` executor reads."""
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank), "WORLD_SIZE": str(self.world_size)}


def trainer_placement(trainer: L.Trainer, tensor_parallel_size: int) -> EnginePlacement:
    """The placement of this process's engine as the Trainer's strategy has set its ranks."""
    return EnginePlacement(trainer.global_rank, trainer.local_rank, trainer.world_size, tensor_parallel_size)


def torchrun_placement(tensor_parallel_size: int) -> EnginePlacement:
    """Outside training: torchrun's ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, or a process of its own when
    ``RANK`` is unset and nothing says that other processes exist."""
    if "RANK" in os.environ:
        env = os.environ
        return EnginePlacement(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]), tensor_parallel_size)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} without RANK: this process's rank is unknown; build the engine "
            "in training (the Trainer knows the ranks) or launch with torchrun"
        )
    if tensor_parallel_size > 1:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={tensor_parallel_size} needs several processes: launch with torchrun "
            "(RANK, LOCAL_RANK, WORLD_SIZE set) or train with a multi-process strategy"
        )
    return EnginePlacement(0, 0, 1)
