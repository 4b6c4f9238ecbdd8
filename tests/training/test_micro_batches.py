"""Gradient accumulation: one optimizer step over a minibatch of 16 completions is the same update whether the
16 run as one forward/backward pass or as micro-batches of 4 or 2 (2 cuts the prompt groups of 4), with the
log-probs computed in one chunk or in chunks of 8 tokens recomputed in the backward pass.

The optimizer is swapped for plain SGD with learning rate 1 and clipping is out of reach, so the parameter
change is minus the accumulated gradient itself: a micro-batch weighted wrongly (say, each micro-batch's
mean loss simply summed) would change it, whereas Adam's first step (about ``lr · sign(g)``) would hide it.
"""

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.bundled import load_bundled
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders
from medrlvr.training.optim import build_lr_scheduler
from medrlvr.training.ppo_module import parameter_groups

register_configs()


def one_update(*overrides: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Parameter changes and logged metrics of one PPO iteration (16 completions, one optimizer step)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = to_train_config(compose(config_name="config", overrides=[
            "experiment=smoke", "data.batch_size=4", "rollout.num_samples=4", "rollout.max_new_tokens=8",
            "algo.mini_batch_size=16", "algo.ppo_epochs=1", "algo.max_grad_norm=1e9", "trainer.max_steps=1",
            *overrides,
        ]))
    L.seed_everything(cfg.seed)
    tokenizer = builders.build_tokenizer(cfg.model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    module, _ = builders.build_module(cfg, tokenizer, prompts)

    def sgd() -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(parameter_groups(module.model, cfg.algo), lr=1.0)
        module.scheduler = build_lr_scheduler(optimizer, cfg.algo, 1)
        return optimizer

    module.configure_optimizers = sgd
    before = {name: p.detach().clone() for name, p in module.model.named_parameters() if p.requires_grad}
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, prompt_loader(load_bundled("train"), cfg.data.batch_size, 1, cfg.seed))
    params = dict(module.model.named_parameters())
    return {name: params[name].detach() - start for name, start in before.items()}, module.last_metrics


@pytest.fixture(scope="module")
def whole() -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    return one_update()


@pytest.mark.parametrize(
    "overrides",
    [
        ["algo.micro_batch_size=4"],
        ["algo.micro_batch_size=2"],
        ["algo.micro_batch_size=4", "model.logits_chunk_size=8"],
    ],
    ids=["4x4", "8x2-cutting-groups", "4x4-chunked-logits"],
)
def test_micro_batches_give_the_update_of_one_pass(whole, overrides):
    deltas, metrics = one_update(*overrides)
    reference_deltas, reference_metrics = whole
    assert any(d.abs().max() > 1e-4 for d in reference_deltas.values())  # the step moved the weights
    for name, delta in deltas.items():
        torch.testing.assert_close(delta, reference_deltas[name], rtol=1e-4, atol=1e-7, msg=name)
    for key in ("loss/policy_loss", "loss/value_loss", "loss/entropy", "loss/clip_frac", "loss/approx_kl", "kl/mean_per_token"):
        assert metrics[key] == pytest.approx(reference_metrics[key], rel=1e-5, abs=1e-7), key


def test_per_sequence_aggregation_accumulates_per_sequence():
    whole_deltas, _ = one_update("algo.loss_aggregation=seq-mean-token-mean")
    deltas, _ = one_update("algo.loss_aggregation=seq-mean-token-mean", "algo.micro_batch_size=4")
    for name, delta in deltas.items():
        torch.testing.assert_close(delta, whole_deltas[name], rtol=1e-4, atol=1e-7, msg=name)
