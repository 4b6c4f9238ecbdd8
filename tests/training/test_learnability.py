"""Learnability: every algorithm raises the reward of a trivially learnable task on the tiny model.

Task: one prompt, one generated token; reward 1 when that token is one of 8 tokens that together
start with 30% of the sampling probability, else 0. A working policy-gradient update
moves probability onto the rewarded tokens it sampled, so the rate rises within a few iterations;
a sign error, a zero advantage or a broken update leaves it at about 0.3.
"""

import math
from collections.abc import Sequence

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from medrlvr.config import TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.bundled import load_bundled
from medrlvr.models.actor_critic import ActorCritic
from medrlvr.models.loading import load_causal_lm
from medrlvr.rewards.base import RewardOutput
from medrlvr.rewards.parsing import parse_completion
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders
from medrlvr.training.ppo_module import PPOModule

pytestmark = pytest.mark.slow
register_configs()
ITERATIONS = 8
TARGET_MASS = 0.3
NUM_TARGETS = 8


class FirstTokenInSetReward:
    """Score 1 when the first token of the generated text is in ``targets``; same contract as the real rewards."""

    def __init__(self, tokenizer, targets: torch.Tensor, prefix: str) -> None:
        self.tokenizer = tokenizer
        self.targets = targets
        self.prefix = prefix

    def __call__(
        self, completions: Sequence[str], answers: Sequence[str], valid_letters: Sequence[str], options=None
    ) -> RewardOutput:
        scores = []
        for text in completions:
            ids = self.tokenizer(text.removeprefix(self.prefix), add_special_tokens=False)["input_ids"]
            scores.append(float(bool(ids) and bool(self.targets[ids[0]])))
        return RewardOutput(
            scores=scores,
            parsed=[parse_completion(t, letters) for t, letters in zip(completions, valid_letters)],
            correct=[s > 0 for s in scores],
            reasoning_words=[0] * len(scores),
            components={"first_token": scores},
        )


class NothingRewarded(FirstTokenInSetReward):
    """Every completion scores 0, so every group has equal rewards."""

    def __init__(self, tokenizer, targets: torch.Tensor, prefix: str) -> None:
        super().__init__(tokenizer, torch.zeros_like(targets), prefix)


class RewardRecorder(L.Callback):
    def __init__(self) -> None:
        self.rewards: list[float] = []
        self.metrics: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.rewards.append(module.last_metrics["reward/mean"])
        self.metrics.append(module.last_metrics)


def compose_config(algo: str, *overrides: str) -> TrainConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=smoke", f"algo={algo}", "data.batch_size=2", "data.prompt.one_shot=false",
                "rollout.num_samples=8", "rollout.max_new_tokens=1", "rollout.temperature=1.0",
                "algo.mini_batch_size=8", "algo.actor_lr=1e-3", "algo.critic_lr=1e-3", "algo.ppo_epochs=1",
                f"trainer.max_steps={ITERATIONS}", *overrides,
            ],
        )
    return to_train_config(cfg)


@torch.no_grad()
def boost_first_tokens(causal_lm, encoded) -> torch.Tensor:
    """Raise the first-response-position logits of ``NUM_TARGETS`` tokens so that together they hold about
    ``TARGET_MASS`` of the probability (the random tiny model is near-uniform over its vocabulary); returns
    the boolean mask of those tokens."""
    hidden = causal_lm(**encoded, output_hidden_states=True).hidden_states[-1][0, -1]
    head = causal_lm.get_output_embeddings().weight
    vocab = head.shape[0]
    boost = math.log(TARGET_MASS / (1 - TARGET_MASS) * (vocab - NUM_TARGETS) / NUM_TARGETS)
    chosen = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[:NUM_TARGETS]
    other = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))
    other = other - (other @ hidden) / hidden.pow(2).sum() * hidden
    direction = hidden / hidden.norm() + other / other.norm()  # 45° from the current hidden state
    head[chosen] += boost * direction / (direction @ hidden)
    probs = torch.softmax(causal_lm(**encoded).logits[0, -1], dim=-1)
    targets = torch.zeros(vocab, dtype=torch.bool)
    targets[chosen] = True
    assert 0.2 < probs[targets].sum() < 0.4
    return targets


def run_iterations(cfg: TrainConfig, reward_cls: type[FirstTokenInSetReward] = FirstTokenInSetReward) -> RewardRecorder:
    """Train in-process for ``trainer.max_steps`` iterations with the first-token reward; return what it logged."""
    L.seed_everything(cfg.seed)
    tokenizer = builders.build_tokenizer(cfg.model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    examples = load_bundled("train")[:1] * cfg.data.batch_size * cfg.trainer.max_steps
    causal_lm = load_causal_lm(cfg.model.name_or_path, tokenizer, seed=cfg.seed)
    targets = boost_first_tokens(causal_lm, tokenizer(prompts(examples[0]), return_tensors="pt", add_special_tokens=False))
    model = ActorCritic(causal_lm, critic_mode=cfg.model.critic if cfg.algo.uses_critic else "none")
    engine = builders.build_rollout_engine(cfg.rollout, model.actor, tokenizer)
    reward = reward_cls(tokenizer, targets, cfg.data.prompt.response_prefix)
    module = PPOModule(model, engine, prompts, reward, cfg.algo, cfg.rollout, cfg.seed)
    recorder = RewardRecorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, callbacks=[recorder],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, prompt_loader(examples, cfg.data.batch_size, cfg.trainer.max_steps, cfg.seed))
    assert len(recorder.rewards) == cfg.trainer.max_steps
    return recorder


@pytest.mark.parametrize("algo", ["ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_mean_reward_rises(algo):
    recorder = run_iterations(compose_config(algo))
    before_any_update, last = recorder.rewards[0], recorder.rewards[-3:]
    assert sum(last) / 3 > before_any_update + 0.3, recorder.rewards
    assert all(0 <= m["reward/equal_reward_group_frac"] <= 1 for m in recorder.metrics)
    assert ("loss/value_loss" in recorder.metrics[-1]) == (algo == "ppo")


def test_harness_detects_an_update_that_does_not_learn():
    recorder = run_iterations(compose_config("grpo", "algo.actor_lr=1e-9"))
    assert sum(recorder.rewards[-3:]) / 3 < recorder.rewards[0] + 0.3, recorder.rewards


def test_filtering_drops_equal_reward_groups_and_skips_an_empty_update():
    cfg = compose_config("grpo", "algo.filter_equal_reward_groups=true", "trainer.max_steps=2")
    recorder = run_iterations(cfg, NothingRewarded)
    for metrics in recorder.metrics:
        assert metrics["reward/equal_reward_group_frac"] == 1.0
        assert metrics["filter/kept_frac"] == 0.0 and metrics["filter/update_skipped"] == 1.0
        assert not any(key.startswith("loss/") for key in metrics)
    kept = run_iterations(compose_config("grpo", "algo.filter_equal_reward_groups=true", "trainer.max_steps=2"))
    for metrics in kept.metrics:
        assert metrics["filter/kept_frac"] == 1 - metrics["reward/equal_reward_group_frac"]
        assert metrics["filter/update_skipped"] == float(metrics["filter/kept_frac"] == 0)
