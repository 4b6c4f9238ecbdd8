"""An engine holding its own copy of the policy (as vLLM does): it is synced before the first rollout (after a
resumed checkpoint is loaded) and after every update, ``rollout/logprob_abs_diff`` measures engine-vs-trainer
mismatch, and ``algo.tis_cap`` reweights the policy loss when there is some."""

import copy

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.bundled import load_bundled
from medrlvr.models.actor_critic import ActorCritic
from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders
from medrlvr.training.checkpointing import CheckpointCallback, latest_checkpoint, save_checkpoint
from medrlvr.training.numerics import NumericsGuard
from medrlvr.training.ppo_module import PPOModule, parameter_groups

register_configs()


class StaleEngine(HFRolloutEngine):
    """Generates from a copy that is never updated: the rollout policy drifts from the trained one."""

    def sync_weights(self, policy: torch.nn.Module) -> None:
        pass


def smoke_config(*overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(
            compose(config_name="config", overrides=["experiment=smoke", "trainer.max_steps=2", *overrides])
        )


def actor_critic(cfg: TrainConfig, tokenizer) -> ActorCritic:
    return ActorCritic(load_causal_lm(cfg.model.name_or_path, tokenizer, seed=cfg.seed), critic_mode="shared")


def perturb(model: ActorCritic) -> None:
    with torch.no_grad():
        for param in model.actor.parameters():
            param.add_(torch.randn_like(param) * 0.05)


def fit(
    engine_cls: type[HFRolloutEngine], *overrides: str, callbacks: tuple[L.Callback, ...] = ()
) -> list[dict[str, float]]:
    """Metrics of each iteration; the trainer recomputes the old log-probs unless ``overrides`` say otherwise (the
    engine here holds a copy of the policy, whose log-probs are not the trainer's)."""
    if not any(o.startswith("algo.reuse_rollout_logprobs=") for o in overrides):
        overrides = ("algo.reuse_rollout_logprobs=false", *overrides)
    cfg = smoke_config(*overrides)
    L.seed_everything(cfg.seed)
    tokenizer = builders.build_tokenizer(cfg.model)
    model = actor_critic(cfg, tokenizer)
    engine = engine_cls(copy.deepcopy(model.actor), tokenizer)
    perturb(model)  # the trained weights differ from the engine's copy
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    module = PPOModule(model, engine, prompts, builders.build_reward(cfg.reward), cfg.algo, cfg.rollout, cfg.seed)
    metrics: list[dict[str, float]] = []
    record = L.Callback()
    record.on_train_batch_end = lambda trainer, module, *args: metrics.append(module.last_metrics)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, callbacks=[*callbacks, record],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    examples = load_bundled("train")[: cfg.data.batch_size * cfg.trainer.max_steps]
    trainer.fit(module, prompt_loader(examples, cfg.data.batch_size, cfg.trainer.max_steps, cfg.seed))
    return metrics


def test_engine_copy_is_synced_before_the_first_rollout_and_after_each_update():
    metrics = fit(HFRolloutEngine)
    assert [m["rollout/logprob_abs_diff"] < 1e-4 for m in metrics] == [True, True], metrics
    stale = fit(StaleEngine)
    assert all(m["rollout/logprob_abs_diff"] > 0.1 for m in stale)


def test_a_resumed_checkpoint_reaches_the_engine_before_the_first_rollout(tmp_path):
    """The checkpoint is loaded (a callback's ``on_train_start``) before the module pushes the policy into the
    engine (its own ``on_train_start``): the first rollout comes from the resumed weights, not the built ones."""
    cfg = smoke_config()
    torch.manual_seed(1)
    saved = actor_critic(cfg, builders.build_tokenizer(cfg.model))
    perturb(saved)  # other weights than those fit() builds
    optimizer = torch.optim.AdamW(parameter_groups(saved, cfg.algo))
    save_checkpoint(tmp_path, 1, saved, optimizer, None, {"numerics": NumericsGuard(1).state_dict()})
    resume = CheckpointCallback(tmp_path / "new", 0, 1, 2, resume_from=latest_checkpoint(tmp_path))
    metrics = fit(HFRolloutEngine, callbacks=(resume,))
    assert metrics[0]["rollout/logprob_abs_diff"] < 1e-4, metrics


def test_truncated_importance_sampling_weights_the_loss_only_under_mismatch():
    synced = fit(HFRolloutEngine, "algo.tis_cap=2.0")
    assert all(abs(m["loss/tis_weight_mean"] - 1) < 1e-3 and m["loss/tis_clip_frac"] == 0 for m in synced)
    stale = fit(StaleEngine, "algo.tis_cap=1.0")
    assert all(m["loss/tis_weight_mean"] < 1 and m["loss/tis_clip_frac"] > 0 for m in stale)
    assert "loss/tis_weight_mean" not in fit(StaleEngine)[0]
