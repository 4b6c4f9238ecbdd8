"""Where each process's rollout engine runs: ranks, world size, device and seed offset as the Trainer takes
them from the launcher (SLURM, Lightning's own launcher), and torchrun's variables outside training."""

import os

import lightning as L
import pytest
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from medrlvr.config import ConfigError
from medrlvr.rollout.placement import EnginePlacement, torchrun_placement, trainer_placement

LAUNCHER_PREFIXES = ("SLURM_", "TORCHELASTIC_")
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def launcher_env(monkeypatch):
    """No launcher variables from the environment the tests run in; returns a setter for the test's own."""
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it process-wide
    for key in list(os.environ):
        if key.startswith(LAUNCHER_PREFIXES) or key in LAUNCHER_VARIABLES:
            monkeypatch.delenv(key)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_env


def ddp_trainer(devices: int, num_nodes: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, num_nodes=num_nodes, strategy=DDPStrategy(), logger=False)


def summary(placement: EnginePlacement) -> tuple[int, int, int, int, int]:
    return placement.rank, placement.local_rank, placement.world_size, placement.device_index, placement.seed_offset


def test_srun_task_is_placed_by_slurms_variables(launcher_env):
    """The fourth of 8 tasks (2 per node): global rank 3, second on its node; nothing sets RANK."""
    launcher_env(SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID="3", SLURM_LOCALID="1", SLURM_NODEID="1",
                 SLURM_JOB_NAME="medrlvr", SLURM_NODELIST="node[1-4]", SLURM_JOB_ID="7")
    trainer = ddp_trainer(devices=2, num_nodes=4)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert summary(trainer_placement(trainer, tensor_parallel_size=1)) == (3, 1, 8, 1, 3)
    tensor_parallel = trainer_placement(trainer, tensor_parallel_size=2)
    assert summary(tensor_parallel) == (3, 1, 8, 1, 1)  # ranks 2 and 3 share an engine and its seed
    assert tensor_parallel.environment() == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}


def test_processes_of_lightnings_own_launcher_are_placed_by_its_variables(launcher_env):
    """``trainer.devices=2 trainer.num_nodes=2``: the script started on a node is that node's first process
    (NODE_RANK set by the user on the second node); Lightning starts the others with LOCAL_RANK, NODE_RANK and
    WORLD_SIZE, and RANK unset."""
    assert summary(trainer_placement(ddp_trainer(devices=2, num_nodes=1), 1)) == (0, 0, 2, 0, 0)
    launcher_env(NODE_RANK="1")
    assert summary(trainer_placement(ddp_trainer(devices=2, num_nodes=2), 1)) == (2, 0, 4, 0, 2)
    launcher_env(LOCAL_RANK="1", NODE_RANK="1", WORLD_SIZE="4", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500")
    trainer = ddp_trainer(devices=2, num_nodes=2)
    assert isinstance(trainer.strategy.cluster_environment, LightningEnvironment)
    assert summary(trainer_placement(trainer, 1)) == (3, 1, 4, 1, 3)
    assert summary(trainer_placement(trainer, 2)) == (3, 1, 4, 1, 1)


def test_outside_training_torchruns_variables_or_a_process_of_its_own(launcher_env):
    assert summary(torchrun_placement(1)) == (0, 0, 1, 0, 0)
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 needs several processes"):
        torchrun_placement(2)
    launcher_env(LOCAL_RANK="1", WORLD_SIZE="2")  # another launcher's process: its rank is not known here
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 without RANK"):
        torchrun_placement(1)
    launcher_env(RANK="5", LOCAL_RANK="1", WORLD_SIZE="8")
    assert summary(torchrun_placement(2)) == (5, 1, 8, 1, 2)


def test_tensor_parallel_groups_must_divide_the_processes():
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 must divide the number of processes \\(3\\)"):
        EnginePlacement(0, 0, 3, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="rank 2"):
        EnginePlacement(2, 0, 2)
