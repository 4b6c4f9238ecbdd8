"""``algo.reuse_rollout_logprobs``: the hf engine's log-probs stand in for the old log-probs (no policy pass), the
rest of the experience is unchanged, the gap is still measured on check iterations, and configurations whose
rollout log-probs differ from the trainer's are refused."""

import pytest
import torch

from medrlvr.config import ConfigError
from medrlvr.data.bundled import load_bundled
from medrlvr.models.actor_critic import ActorCritic
from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.base import SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine
from medrlvr.training import builders
from medrlvr.training.experience import make_experience

from tests.training.test_rollout_mismatch import fit, smoke_config


def experience_pair(critic_mode: str, estimator: str):
    """One rollout of the tiny model and its experience made both ways; counts the actor's log-prob passes."""
    cfg = smoke_config()
    tokenizer = builders.build_tokenizer(cfg.model)
    model = ActorCritic(load_causal_lm(cfg.model.name_or_path, tokenizer, seed=cfg.seed), critic_mode=critic_mode)
    engine = HFRolloutEngine(model.actor, tokenizer)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    rollout = engine.generate([prompts(e) for e in load_bundled("train")[:3]], SamplingParams(4, 12, 0.7, seed=5))
    scores = torch.tensor([1.0, 0.0, -1.0, 0.0] * 3)
    actor_passes = []
    forward = model.policy_forward

    def counting(*args, reference=False, **kwargs):
        actor_passes.append(not reference)
        return forward(*args, reference=reference, **kwargs)

    model.policy_forward = counting
    settings = dict(
        temperature=0.7, kl_coef=0.05, kl_estimator="k1", advantage_estimator=estimator, gamma=1.0, lam=1.0,
        group_eps=1e-9, whiten_advantages=True, forward_batch_size=8,
    )
    recomputed = make_experience(model, rollout, scores, **settings)
    recomputed_passes, actor_passes[:] = sum(actor_passes), []
    reused = make_experience(model, rollout, scores, **settings, reuse_rollout_logprobs=True)
    return rollout, recomputed, reused, recomputed_passes, sum(actor_passes)


@pytest.mark.parametrize("critic_mode, estimator", [("shared", "gae"), ("separate", "gae"), ("none", "grpo")])
def test_reused_experience_equals_the_recomputed_one_without_a_policy_pass(critic_mode, estimator):
    rollout, recomputed, reused, recomputed_passes, reused_passes = experience_pair(critic_mode, estimator)
    mask = rollout.response_mask.float()
    assert (recomputed_passes, reused_passes) == (2, 0)  # 12 rows in chunks of 8 (whole groups of 4): 2 passes
    assert torch.equal(reused.old_logprobs, rollout.logprobs * mask)
    torch.testing.assert_close(recomputed.old_logprobs, reused.old_logprobs, atol=1e-5, rtol=0)
    assert torch.equal(reused.ref_logprobs, recomputed.ref_logprobs)
    torch.testing.assert_close(reused.values, recomputed.values, atol=1e-6, rtol=1e-6)  # no output layer, same trunk
    if critic_mode == "none":
        assert not reused.values.any()
    torch.testing.assert_close(reused.advantages, recomputed.advantages, atol=1e-4, rtol=0)
    torch.testing.assert_close(reused.kl, recomputed.kl, atol=1e-5, rtol=0)


def test_the_gap_is_measured_on_the_first_and_every_check_iteration_only():
    metrics = fit(HFRolloutEngine, "trainer.max_steps=3", "algo.reuse_rollout_logprobs=true", "algo.logprob_check_every=2")
    assert ["rollout/logprob_abs_diff" in m for m in metrics] == [True, True, False]
    assert all(m["rollout/logprob_abs_diff"] < 1e-4 for m in metrics[:2])
    assert all("perf/iteration_s" in m for m in metrics)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout=vllm"], "rollout.backend=vllm"),
        (["trainer.precision=bf16-mixed"], "trainer.precision=bf16-mixed"),
        (["model.dtype=bfloat16"], "model.dtype=bfloat16"),
        (["trainer.strategy=deepspeed"], "trainer.strategy=deepspeed"),
        (["algo.tis_cap=2.0"], "algo.tis_cap"),
    ],
)
def test_reuse_is_refused_where_the_rollout_log_probs_differ(overrides, message):
    with pytest.raises(ConfigError, match=r"algo\.reuse_rollout_logprobs.*" + message.replace(".", r"\.")):
        smoke_config("algo.reuse_rollout_logprobs=true", *overrides)
    with pytest.raises(ConfigError, match=r"algo\.logprob_check_every"):
        smoke_config("algo.logprob_check_every=0")


@pytest.mark.parametrize(
    "overrides, reused",
    [
        ([], True),
        (["rollout=vllm"], False),
        (["trainer.precision=bf16-mixed"], False),
        (["trainer.strategy=deepspeed"], False),
        (["algo.tis_cap=2.0"], False),
        (["algo.reuse_rollout_logprobs=false"], False),
    ],
)
def test_by_default_the_rollout_log_probs_are_reused_wherever_they_are_the_trainers(overrides, reused):
    assert smoke_config(*overrides).algo.reuse_rollout_logprobs is reused
