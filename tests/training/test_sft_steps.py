"""SFT training steps under Lightning, tiny model: a non-finite loss or gradient skips the step (counted as
PPO counts it, ``numerics/*``) and training goes on; resuming from a checkpoint ends where the uninterrupted run
ends (weights, optimizer, schedule and guard state)."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from medrlvr.config import TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.bundled import load_bundled
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders, sft_module
from medrlvr.training.checkpointing import OPTIMIZER, STATE, TRAINABLE, CheckpointCallback, verify
from medrlvr.training.sft_module import SFTModule

register_configs()
STEPS = 3


def sft_config(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=[
            "experiment=smoke_sft", f"trainer.max_steps={STEPS}", "trainer.max_bad_updates=3", *overrides,
        ]))


def poison(monkeypatch: pytest.MonkeyPatch, module: SFTModule, iterations: tuple[int, ...], where: str) -> None:
    """Make the ``where`` (``loss`` or ``gradients``) of ``iterations`` NaN."""
    original = sft_module.sft_loss

    def poisoned(*args, **kwargs) -> torch.Tensor:
        loss = original(*args, **kwargs)
        if module.iteration not in iterations:
            return loss
        if where == "loss":
            return loss * float("nan")
        loss.register_hook(lambda grad: grad * float("nan"))  # a finite loss with NaN gradients
        return loss

    monkeypatch.setattr(sft_module, "sft_loss", poisoned)


def fit(
    cfg: TrainConfig, *callbacks: L.Callback, start: int = 0, poisoned: tuple[int, ...] = (),
    where: str = "loss", monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[SFTModule, list[dict[str, float]], list[dict[str, torch.Tensor]]]:
    """Fit SFT steps ``start + 1`` to ``STEPS``; returns the module, each step's metrics and trainable weights."""
    L.seed_everything(cfg.seed)
    tokenizer = builders.build_tokenizer(cfg.model)
    module, _ = builders.build_module(cfg, tokenizer, builders.build_prompt_builder(cfg.data.prompt, tokenizer), start)
    if poisoned:
        poison(monkeypatch, module, poisoned, where)  # type: ignore[arg-type]
    metrics: list[dict[str, float]] = []
    weights: list[dict[str, torch.Tensor]] = []

    def record(trainer: L.Trainer, module: SFTModule, *args) -> None:
        metrics.append(module.last_metrics)
        weights.append({name: p.detach().clone() for name, p in module.policy.named_parameters() if p.requires_grad})

    recorder = L.Callback()
    recorder.on_train_batch_end = record
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, callbacks=[*callbacks, recorder],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    examples = load_bundled("train")[: cfg.data.batch_size * STEPS]
    trainer.fit(module, prompt_loader(examples, cfg.data.batch_size, STEPS, cfg.seed, start))
    return module, metrics, weights  # type: ignore[return-value]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("where", ["loss", "gradients"])
def test_a_non_finite_step_is_skipped_and_counted_and_training_goes_on(monkeypatch, caplog, where):
    module, metrics, weights = fit(sft_config(), poisoned=(2,), where=where, monkeypatch=monkeypatch)
    assert not same(weights[0], weights[2]) and same(weights[0], weights[1])
    assert [m["numerics/skipped_update"] for m in metrics] == [0.0, 1.0, 0.0]
    assert [m["numerics/bad_iterations"] for m in metrics] == [0.0, 1.0, 1.0]
    assert ["loss/sft" in m for m in metrics] == [True, False, True]
    assert module.scheduler.last_epoch == 2  # two optimizer steps
    assert all(state["step"] == 2 for state in module.optimizers().optimizer.state.values())
    assert f"iteration 2: non-finite {where}; update skipped" in caplog.text


def checkpoint_files(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    state = json.loads((folder / STATE).read_text())
    return load_file(str(folder / TRAINABLE)), torch.load(folder / OPTIMIZER, weights_only=True), state["extra"]


def test_resuming_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch):
    cfg = sft_config()
    straight = CheckpointCallback(tmp_path / "straight", every=1, keep=STEPS, max_steps=STEPS)
    fit(cfg, straight, poisoned=(2,), monkeypatch=monkeypatch)  # the guard's count must resume too
    resume_from = verify(tmp_path / "straight" / "iter_00002")
    resumed = CheckpointCallback(tmp_path / "resumed", every=1, keep=STEPS, max_steps=STEPS, resume_from=resume_from)
    _, metrics, _ = fit(cfg, resumed, start=2)
    assert [m["numerics/bad_iterations"] for m in metrics] == [1.0]

    weights, optimizer, extra = checkpoint_files(tmp_path / "resumed" / "iter_00003")
    expected_weights, expected_optimizer, expected_extra = checkpoint_files(tmp_path / "straight" / "iter_00003")
    assert weights and same(weights, expected_weights)
    for state, expected_state in zip(optimizer["state"].values(), expected_optimizer["state"].values(), strict=True):
        assert same(state, expected_state)
    assert optimizer["param_groups"] == expected_optimizer["param_groups"]
    assert extra["lr_scheduler"] == expected_extra["lr_scheduler"] and extra["lr_scheduler"]["last_epoch"] == 2
    assert extra["numerics"] == expected_extra["numerics"] == {"total_bad": 1, "consecutive_bad": 0}
