"""Checkpoints: round trip, atomic layout, last-K pruning, damage detection with fallback, no NaN checkpoints."""

import dataclasses
import json
import logging
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medrlvr.training.checkpointing import (
    MANIFEST,
    OPTIMIZER,
    TRAINABLE,
    CheckpointError,
    check_owner,
    latest_checkpoint,
    load_checkpoint,
    load_sharded_checkpoint,
    resolve_resume,
    save_checkpoint,
)


def model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)  # frozen weights are rebuilt from the config, not saved
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_trainable_weights_optimizer_and_rngs(tmp_path):
    model, optimizer = model_and_optimizer()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path, 7, model, optimizer, run_id="abc", extra={"numerics": {"total_bad": 1}})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    assert path.name == "iter_00007" and sorted(p.name for p in tmp_path.iterdir()) == ["iter_00007"]
    assert set(load_file(str(path / TRAINABLE))) == {"1.weight", "1.bias"}
    restored, fresh_optimizer = model_and_optimizer(seed=5)
    checkpoint = latest_checkpoint(tmp_path)
    assert (checkpoint.iteration, checkpoint.run_id) == (7, "abc")
    assert checkpoint.state["extra"] == {"numerics": {"total_bad": 1}}
    load_checkpoint(checkpoint, restored, fresh_optimizer)
    assert torch.equal(restored[1].weight, model[1].weight) and torch.equal(restored[1].bias, model[1].bias)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_only_the_last_k_are_kept(tmp_path):
    model, optimizer = model_and_optimizer()
    for iteration in (1, 2, 3, 4):
        save_checkpoint(tmp_path, iteration, model, optimizer, None, keep=2)
    (tmp_path / ".tmp-iter_00005-123").mkdir()  # left by a crash mid-write
    save_checkpoint(tmp_path, 5, model, optimizer, None, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_00004", "iter_00005"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest"])
def test_damaged_latest_falls_back_to_the_previous_with_a_warning(tmp_path, caplog, damage):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 1, model, optimizer, "run", keep=3)
    latest = save_checkpoint(tmp_path, 2, model, optimizer, "run", keep=3)
    target = latest / (MANIFEST if damage == "no_manifest" else OPTIMIZER)
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING):
        checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint.iteration == 1
    assert str(target) in caplog.text and "skipping damaged checkpoint" in caplog.text


def test_resume_auto_finds_checkpoints_under_the_output_dir_and_an_explicit_path_is_verified(tmp_path):
    model, optimizer = model_and_optimizer()
    assert resolve_resume("auto", tmp_path) is None  # a fresh output dir starts from scratch
    path = save_checkpoint(tmp_path / "checkpoints", 3, model, optimizer, "run")
    assert resolve_resume("auto", tmp_path).iteration == 3
    assert resolve_resume(str(path), tmp_path / "elsewhere").iteration == 3
    (path / TRAINABLE).write_bytes(b"")
    with pytest.raises(CheckpointError, match="trainable.safetensors: 0 bytes"):
        resolve_resume(str(path), tmp_path)


def test_non_finite_weights_are_never_written(tmp_path):
    model, optimizer = model_and_optimizer()
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite values in \\['1.bias'\\]"):
        save_checkpoint(tmp_path, 1, model, optimizer, None)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_from_another_model_is_refused(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 1, model, optimizer, None)
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(latest_checkpoint(tmp_path), other, torch.optim.AdamW(other.parameters()))


class StageTwoEngine:
    """Stands in for a DeepSpeed engine: only its ZeRO stage is read before loading."""

    def zero_optimization_stage(self) -> int:
        return 2


def test_a_checkpoint_of_another_layout_is_refused(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 1, model, optimizer, None)
    full = latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="state.json: written with layout {'format': 'full'}, this run needs"):
        load_sharded_checkpoint(full, StageTwoEngine(), model, rank=0, world_size=2)
    layout = {"format": "deepspeed", "processes": 2, "zero_stage": 2}
    sharded = dataclasses.replace(full, state={**full.state, "layout": layout})
    with pytest.raises(CheckpointError, match="'zero_stage': 2}, this run needs {'format': 'full'}"):
        load_checkpoint(sharded, model, optimizer)
    with pytest.raises(CheckpointError, match="'processes': 2, 'zero_stage': 2}, this run needs .*'processes': 4"):
        load_sharded_checkpoint(sharded, StageTwoEngine(), model, rank=0, world_size=4)


def test_lora_checkpoints_hold_only_adapters_and_value_head(tmp_path, tokenizer):
    from medrlvr.models.actor_critic import ActorCritic, LoraSettings
    from medrlvr.models.loading import load_causal_lm

    model = ActorCritic(load_causal_lm("tiny", tokenizer), LoraSettings(rank=4, top_layers=1), "shared")
    optimizer = torch.optim.AdamW(model.actor_parameters() + model.critic_parameters())
    path = save_checkpoint(tmp_path, 1, model, optimizer, None)
    names = set(load_file(str(path / TRAINABLE)))
    assert names and all("lora_" in n or n.startswith("value_head.") for n in names)
    assert any("layers.1." in n for n in names) and not any("layers.0." in n for n in names)
    assert json.loads((path / MANIFEST).read_text())["files"][TRAINABLE]["bytes"] < 200_000


def test_pruning_keeps_the_checkpoints_of_other_runs(tmp_path):
    model, optimizer = model_and_optimizer()
    for iteration in (5, 6):
        save_checkpoint(tmp_path, iteration, model, optimizer, run_id="old", keep=2)
    for iteration in (1, 2):
        save_checkpoint(tmp_path, iteration, model, optimizer, run_id="new", keep=1)
    owners = {p.name: json.loads((p / "state.json").read_text())["run_id"] for p in tmp_path.iterdir()}
    # the old run's checkpoints are newer, but not the new run's to delete; the new run keeps its newest
    assert owners == {"iter_00002": "new", "iter_00005": "old", "iter_00006": "old"}


def test_a_folder_with_another_runs_checkpoints_is_refused(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 4, model, optimizer, run_id="old")
    check_owner(tmp_path, "old")  # resuming the run that owns the folder
    check_owner(tmp_path / "empty", None)  # a fresh run in a fresh folder
    with pytest.raises(CheckpointError, match=r"holds checkpoints of MLflow run old \(newest iter_00004\): continue"):
        check_owner(tmp_path, None)
    with pytest.raises(CheckpointError, match=r"not of the run being resumed \(other\)"):
        check_owner(tmp_path, "other")
