"""The optimizer's conventions: Adam betas, the learning-rate schedule (its length and its exact resumption),
gradient clipping of actor and critic together or apart."""

import json
import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import AlgoConfig, TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.training import builders
from medrlvr.training.optim import build_lr_scheduler, learning_rates, load_lr_scheduler, optimizer_steps
from medrlvr.training.ppo_module import PPOModule, grad_norm_stats
from medrlvr.training.strategies import clip_and_step

register_configs()


def train_config(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=list(overrides)))


def smoke_config(*overrides: str) -> TrainConfig:
    return train_config("experiment=smoke", *overrides)


def smoke_module(cfg: TrainConfig) -> PPOModule:
    tokenizer = builders.build_tokenizer(cfg.model)
    module, _ = builders.build_module(cfg, tokenizer, builders.build_prompt_builder(cfg.data.prompt, tokenizer))
    return module  # type: ignore[return-value]


@pytest.mark.parametrize("overrides, betas", [([], (0.9, 0.999)), (["algo.adam_betas=[0.9,0.95]"], (0.9, 0.95))])
def test_adam_betas_reach_every_parameter_group(overrides, betas):
    optimizer = smoke_module(smoke_config(*overrides)).configure_optimizers()
    assert [group["betas"] for group in optimizer.param_groups] == [betas, betas]


def test_med_rlvr_uses_openrlhf_optimisation_conventions():
    algo = train_config("experiment=med_rlvr", "model=tiny").algo
    assert algo.adam_betas == [0.9, 0.95]
    assert (algo.lr_scheduler, algo.lr_warmup_ratio, algo.min_lr_ratio) == ("cosine_with_min_lr", 0.03, 0.1)
    assert train_config("experiment=med_rlvr", "model=tiny").trainer.max_epochs == 10


def test_optimizer_steps_count_iterations_epochs_and_minibatches():
    algo = AlgoConfig(ppo_epochs=2, mini_batch_size=16)
    assert optimizer_steps(algo, prompts=8, num_samples=4, iterations=5) == 5 * 2 * 2
    # minibatches hold whole prompt groups: 6 rows become one group of 4, so 32 rows make 8 minibatches
    assert optimizer_steps(AlgoConfig(ppo_epochs=1, mini_batch_size=6), prompts=8, num_samples=4, iterations=1) == 8


def two_groups() -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.AdamW([{"params": [params[0]], "lr": 1e-6, "name": "actor"},
                              {"params": [params[1]], "lr": 9e-6, "name": "critic"}])


def lrs_after(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list[dict[str, float]]:
    seen = []
    for _ in range(steps):
        seen.append(learning_rates(scheduler.optimizer))
        scheduler.optimizer.step()
        scheduler.step()
    return seen


def test_constant_schedule_keeps_the_learning_rates():
    seen = lrs_after(build_lr_scheduler(two_groups(), AlgoConfig(), 1), 5)
    assert seen == [{"lr/actor": 1e-6, "lr/critic": 9e-6}] * 5


def test_cosine_warms_up_then_decays_each_group_to_its_floor():
    algo = AlgoConfig(lr_scheduler="cosine_with_min_lr", lr_warmup_ratio=0.03, min_lr_ratio=0.1)
    seen = lrs_after(build_lr_scheduler(two_groups(), algo, 100), 101)
    assert seen[0]["lr/actor"] == 0.0  # ceil(0.03 × 100) = 3 warmup steps
    assert seen[1]["lr/actor"] == pytest.approx(1e-6 / 3)
    assert seen[3] == pytest.approx({"lr/actor": 1e-6, "lr/critic": 9e-6})
    middle = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 47 / 97))
    assert seen[50] == pytest.approx({"lr/actor": 1e-6 * middle, "lr/critic": 9e-6 * middle})
    assert seen[100] == pytest.approx({"lr/actor": 1e-7, "lr/critic": 9e-7})
    actor = [lr["lr/actor"] for lr in seen[3:]]
    assert actor == sorted(actor, reverse=True)


def test_a_schedule_restored_from_json_continues_exactly():
    algo = AlgoConfig(lr_scheduler="cosine_with_min_lr")
    straight = build_lr_scheduler(two_groups(), algo, 60)
    expected = lrs_after(straight, 60)
    first = build_lr_scheduler(two_groups(), algo, 60)
    lrs_after(first, 25)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints keep it in state.json
    resumed = build_lr_scheduler(two_groups(), algo, 60)  # a fresh optimizer at the peak rates
    load_lr_scheduler(resumed, state)
    assert lrs_after(resumed, 35) == expected[25:]


def test_a_resumed_schedule_takes_changed_learning_rates_at_the_saved_step():
    algo = AlgoConfig(lr_scheduler="cosine_with_min_lr")
    first = build_lr_scheduler(two_groups(), algo, 60)
    lrs_after(first, 30)
    optimizer = two_groups()
    optimizer.param_groups[0]["lr"] = 2e-6  # actor_lr doubled on resume
    resumed = build_lr_scheduler(optimizer, algo, 60)
    load_lr_scheduler(resumed, json.loads(json.dumps(first.state_dict())))
    assert learning_rates(optimizer)["lr/actor"] == pytest.approx(2 * learning_rates(first.optimizer)["lr/actor"])
    assert learning_rates(optimizer)["lr/critic"] == learning_rates(first.optimizer)["lr/critic"]


def test_a_decaying_schedule_needs_the_run_length():
    cfg = smoke_config("algo.lr_scheduler=cosine_with_min_lr")
    module = smoke_module(cfg)
    module.total_optimizer_steps = None
    with pytest.raises(ValueError, match="total_optimizer_steps"):
        module.configure_optimizers()


def with_gradients(*norms: float) -> list[torch.nn.Parameter]:
    """One parameter per norm, whose gradient (3/5, 4/5) × norm has that norm."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in norms]
    for param, norm in zip(params, norms):
        param.grad = torch.tensor([0.6, 0.8]) * norm
    return params


def test_groups_are_clipped_together_or_apart():
    actor, critic = with_gradients(3.0, 4.0)
    norms, stepped = clip_and_step(L.LightningModule(), torch.optim.SGD([actor, critic]), [[actor, critic]], 1.0)
    assert stepped and norms == [pytest.approx(5.0)]
    assert [p.grad.norm().item() for p in (actor, critic)] == pytest.approx([3 / 5, 4 / 5])

    actor, critic = with_gradients(3.0, 0.5)
    norms, stepped = clip_and_step(L.LightningModule(), torch.optim.SGD([actor, critic]), [[actor], [critic]], 1.0)
    assert stepped and norms == [pytest.approx(3.0), pytest.approx(0.5)]
    assert [p.grad.norm().item() for p in (actor, critic)] == pytest.approx([1.0, 0.5])


def test_a_non_finite_norm_in_any_group_skips_the_step():
    actor, critic = with_gradients(1.0, float("inf"))
    optimizer = torch.optim.SGD([actor, critic], lr=1.0)
    _, stepped = clip_and_step(L.LightningModule(), optimizer, [[actor], [critic]], 1.0)
    assert not stepped and actor.grad is None and torch.equal(actor.detach(), torch.zeros(2))


def test_grad_norm_stats_log_the_joint_norm_and_each_apart():
    assert grad_norm_stats([2.0]) == {"grad_norm": 2.0}
    assert grad_norm_stats([3.0, 4.0]) == {"grad_norm": 5.0, "grad_norm_actor": 3.0, "grad_norm_critic": 4.0}


@pytest.mark.parametrize("separate, groups", [("false", 1), ("true", 2)])
def test_separate_clipping_splits_actor_and_critic(separate, groups):
    module = smoke_module(smoke_config(f"algo.separate_clipping={separate}"))
    found = module._clipping_groups()
    assert len(found) == groups
    assert sum(len(group) for group in found) == len(module.model.actor_parameters() + module.model.critic_parameters())
