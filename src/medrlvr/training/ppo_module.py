"""PPO and its critic-free relatives as a LightningModule: one ``training_step`` is one iteration.

Order of operations: generate → score → log-probs (and values with a critic) → KL-shaped rewards and
advantages (GAE, GRPO, Dr. GRPO, RLOO or REINFORCE++) → optional dropping of groups whose rewards are
all equal → ``ppo_epochs`` × minibatches of clipped policy loss (+ value loss with a critic, + KL loss
term) → push weights into the rollout engine. All formulas live in :mod:`medrlvr.algo`; this module
only orders the calls.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch

from medrlvr.algo import advantages as adv
from medrlvr.algo import core
from medrlvr.algo.assembly import LossSettings, ppo_loss
from medrlvr.config import AlgoConfig, RolloutConfig
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import ExampleBatch, MCQExample
from medrlvr.models.actor_critic import ActorCritic
from medrlvr.rewards.base import RewardFn, RewardOutput
from medrlvr.rewards.parsing import FORMAT_ERRORS, ParsedCompletion
from medrlvr.rollout.base import EngineBuilder, RolloutBatch, RolloutEngine, SamplingParams
from medrlvr.training.distributed import gather_metrics
from medrlvr.training.experience import Experience, group_size, make_experience, whole_group_rows
from medrlvr.training.numerics import NumericsGuard, nonfinite
from medrlvr.training.optim import build_lr_scheduler, learning_rates
from medrlvr.training.policy_module import PolicyModule
from medrlvr.training.strategies import begin_micro_batch, deepspeed_engine

log = logging.getLogger(__name__)
# statistics aggregated like the loss (the rest are means over response tokens)
_LOSS_STATS = frozenset({"policy_loss", "value_loss", "kl_loss"})


def parameter_groups(model: ActorCritic, algo: AlgoConfig) -> list[dict[str, Any]]:
    """An actor group at ``actor_lr`` and, with a critic, a critic group at ``critic_lr``: only trainable
    parameters, so the frozen reference never gets optimizer state."""
    groups = [{"params": model.actor_parameters(), "lr": algo.actor_lr, "name": "actor"}]
    if model.has_critic:
        groups.append({"params": model.critic_parameters(), "lr": algo.critic_lr, "name": "critic"})
    return groups


def grad_norm_stats(norms: list[float]) -> dict[str, float]:
    """``grad_norm`` of all clipped gradients and, given the actor's and the critic's norms apart,
    ``grad_norm_actor`` and ``grad_norm_critic``."""
    stats = {"grad_norm": math.hypot(*norms)}
    if len(norms) == 2:
        stats |= {"grad_norm_actor": norms[0], "grad_norm_critic": norms[1]}
    return stats


def loss_settings(algo: AlgoConfig, max_new_tokens: int) -> LossSettings:
    """The loss's settings: ``algo``'s of the same names; ``seq-mean-token-sum-norm`` divides by ``max_new_tokens``."""
    same_names = [field.name for field in fields(LossSettings) if field.name != "norm_constant"]
    return LossSettings(**{name: getattr(algo, name) for name in same_names}, norm_constant=float(max_new_tokens))


def format_error_shares(parsed: list[ParsedCompletion]) -> dict[str, float]:
    """``format_error/<name>``: share of completions failing with each parser error, 0 for those that did not occur."""
    errors = [p.format_error for p in parsed]
    return {f"format_error/{name}": errors.count(name) / len(parsed) for name in FORMAT_ERRORS}


class PPOModule(PolicyModule):
    """Owns actor, critic and reference (in :class:`ActorCritic`) and the rollout engine.

    Given ``build_model`` instead of ``model``, it builds the models in :meth:`configure_model`, which
    Lightning calls inside the strategy's sharding context (DeepSpeed ZeRO-3 partitions every parameter as
    it is created); given ``build_engine`` instead of ``engine``, it builds the engine in :meth:`on_fit_start`.
    Under several processes each one generates from its own prompts; the update's collectives keep them in
    step, and the logged metrics are combined over all of them.

    ``total_optimizer_steps`` (the run's, see :func:`medrlvr.training.optim.optimizer_steps`) is the length of
    the learning-rate schedule; only ``algo.lr_scheduler=constant`` runs without it.
    """

    def __init__(
        self,
        model: ActorCritic | None,
        engine: RolloutEngine | None,
        prompt_builder: PromptBuilder,
        reward_fn: RewardFn,
        algo: AlgoConfig,
        rollout: RolloutConfig,
        seed: int,
        guard: NumericsGuard | None = None,
        first_iteration: int = 0,
        build_model: Callable[[], ActorCritic] | None = None,
        build_engine: EngineBuilder | None = None,
        total_optimizer_steps: int | None = None,
    ) -> None:
        super().__init__(engine, build_engine, guard, first_iteration)
        if model is None and build_model is None:
            raise ValueError("PPOModule needs a model (or build_model)")
        self.model = model
        self._build_model = build_model
        self.prompt_builder = prompt_builder
        self.reward_fn = reward_fn
        self.algo = algo
        self.rollout_cfg = rollout
        self.seed = seed
        self.total_optimizer_steps = total_optimizer_steps

    def configure_model(self) -> None:
        """Build actor, critic and reference once (under the strategy's sharding context)."""
        if self.model is None:
            self.model = self._build_model()  # type: ignore[misc]

    def rollout_policy(self) -> torch.nn.Module:
        """The actor."""
        return self.model.actor  # type: ignore[union-attr]

    def _reuses_rollout_logprobs(self, iteration: int) -> bool:
        """Whether this iteration takes the rollout's log-probs as old log-probs (``algo.reuse_rollout_logprobs``);
        iteration 1 and every ``algo.logprob_check_every``-th recompute them to measure the gap. The choice depends
        on the iteration alone, so a resumed run computes what the uninterrupted one did."""
        checked = iteration == 1 or iteration % self.algo.logprob_check_every == 0
        return self.algo.reuse_rollout_logprobs and not checked

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One AdamW over :func:`parameter_groups` (DeepSpeed strategies accept one optimizer), and its
        learning-rate schedule in ``self.scheduler``, stepped by the module after each optimizer step (also
        under DeepSpeed, whose engine is not given it) and saved in checkpoints' run state."""
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, self.algo),
            betas=tuple(self.algo.adam_betas),  # type: ignore[arg-type]
            weight_decay=self.algo.weight_decay,
        )
        if self.total_optimizer_steps is None and self.algo.lr_scheduler != "constant":
            raise ValueError(f"algo.lr_scheduler={self.algo.lr_scheduler} needs the run's total_optimizer_steps")
        self.scheduler = build_lr_scheduler(optimizer, self.algo, self.total_optimizer_steps or 1)
        return optimizer

    def training_step(self, batch: ExampleBatch, batch_idx: int) -> None:
        iteration = self.iteration = self.first_iteration + batch_idx + 1
        timings: dict[str, float] = {}
        start = time.perf_counter()
        rollout = self.engine.generate([self.prompt_builder(e) for e in batch], self._sampling_params(iteration))
        rollout = rollout.to(self.device)
        timings["generate"] = time.perf_counter() - start

        start = time.perf_counter()
        rows = [batch[i] for i in rollout.prompt_index]
        responses = [self.prompt_builder.full_response(t) for t in rollout.texts]
        scored = self.reward_fn(
            responses, [e.answer for e in rows], [e.letters for e in rows], [e.options for e in rows]
        )
        timings["score"] = time.perf_counter() - start

        start = time.perf_counter()
        experience = make_experience(
            self.model,
            rollout,
            torch.tensor(scored.scores, dtype=torch.float32, device=self.device),
            temperature=self.rollout_cfg.temperature,
            kl_coef=self.algo.kl_coef if self.algo.kl_in_reward else 0.0,
            kl_estimator=self.algo.kl_estimator,
            advantage_estimator=self.algo.advantage_estimator,
            gamma=self.algo.gamma,
            lam=self.algo.lam,
            group_eps=self.algo.group_eps,
            whiten_advantages=self.algo.whiten_advantages,
            forward_batch_size=self.algo.forward_batch_size,  # type: ignore[arg-type]
            reuse_rollout_logprobs=self._reuses_rollout_logprobs(iteration),
        )
        timings["logprobs"] = time.perf_counter() - start

        start = time.perf_counter()
        group = group_size(rollout.prompt_index)
        equal_groups = adv.equal_reward_groups(experience.scores, group)
        group_stats = {"reward/equal_reward_group_frac": equal_groups.float().mean().item()}
        kept = experience
        if self.algo.filter_equal_reward_groups:
            keep_rows = (~equal_groups).repeat_interleave(group).nonzero().squeeze(1)
            kept = experience.select(keep_rows)
            group_stats["filter/kept_frac"] = len(kept) / len(experience)
            group_stats["filter/update_skipped"] = float(len(kept) == 0)
        update_stats, problems = self._update(kept, iteration) if len(kept) else ({}, [])
        numerics = self.guard.record(iteration, problems)
        if not len(kept):
            log.warning("iteration %d: every prompt group has equal rewards; update skipped", iteration)
        timings["update"] = time.perf_counter() - start

        start = time.perf_counter()
        self.engine.sync_weights(self.model.actor)
        timings["weight_sync"] = time.perf_counter() - start

        local = self._metrics(rollout, scored, experience, update_stats, timings) | group_stats | numerics
        local |= learning_rates(self.scheduler.optimizer)  # type: ignore[union-attr]
        self.last_metrics = gather_metrics(local)
        self.last_samples = self._samples(rows, responses, scored, iteration)
        if self.logger is not None:
            self.logger.log_metrics(self.last_metrics, step=iteration)

    def _sampling_params(self, iteration: int) -> SamplingParams:
        cfg = self.rollout_cfg
        return SamplingParams(
            num_samples=cfg.num_samples,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            stop_strings=tuple(cfg.stop_strings),
            seed=self.seed * 100_003 + iteration * 1_009 + self.global_rank,
        )

    def _update(self, experience: Experience, iteration: int) -> tuple[dict[str, float], list[str]]:
        """``ppo_epochs`` passes over shuffled minibatches, one optimizer step each; returns the mean of each
        loss statistic and the names of non-finite quantities that made it skip updates (all of them if
        advantages are non-finite)."""
        generator = torch.Generator().manual_seed(self.seed + iteration)
        stats: dict[str, list[float]] = defaultdict(list)
        problems = nonfinite(advantages=experience.advantages, returns=experience.returns)
        if problems:
            return {}, problems
        self.model.train()
        group = experience.sharing.group_size
        for _ in range(self.algo.ppo_epochs):
            # whole prompt groups per minibatch, so each group's prompt runs once
            groups = torch.randperm(len(experience) // group, generator=generator)
            order = (groups.unsqueeze(1) * group + torch.arange(group)).flatten()
            for index in order.split(whole_group_rows(self.algo.mini_batch_size, group)):
                step_stats, problem = self._optimizer_step(experience.select(index.to(experience.input_ids.device)))
                if problem is not None:
                    problems.append(problem)
                    continue
                for key, value in step_stats.items():
                    stats[key].append(value)
        return {key: sum(values) / len(values) for key, values in stats.items()}, problems

    def _optimizer_step(self, minibatch: Experience) -> tuple[dict[str, float], str | None]:
        """One optimizer step on ``minibatch``, its gradients accumulated over micro-batches of
        ``algo.micro_batch_size`` rows. Returns the minibatch's statistics, or the problem that skipped the step.

        Each micro-batch's loss is weighted by its share of the minibatch (:func:`core.accumulation_weight`),
        so the accumulated gradient is the minibatch's whatever the micro-batch size. A non-finite loss or
        gradient skips the step (:meth:`backward_unless_nonfinite`, :meth:`step_optimizer`).
        """
        engine = deepspeed_engine(self)
        self.optimizers().zero_grad()
        micro_batches = minibatch.split(self.algo.micro_batch_size)  # type: ignore[arg-type]
        totals: dict[str, float] = defaultdict(float)
        for number, micro in enumerate(micro_batches, start=1):
            begin_micro_batch(engine)
            loss, micro_stats = self._loss(micro)
            loss_share = core.accumulation_weight(micro.response_mask, minibatch.response_mask, self.algo.loss_aggregation)  # type: ignore[arg-type]
            if self.backward_unless_nonfinite(loss, loss_share, last=number == len(micro_batches)):
                return {}, "loss"
            token_share = core.accumulation_weight(micro.response_mask, minibatch.response_mask)
            for key, value in micro_stats.items():
                totals[key] += value * (loss_share if key in _LOSS_STATS else token_share)
        norms = self.step_optimizer(self._clipping_groups(), self.algo.max_grad_norm)
        if norms is None:
            return {}, "gradients"
        return dict(totals) | grad_norm_stats(norms), None

    def _clipping_groups(self) -> list[list[torch.nn.Parameter]]:
        """Actor and critic parameters, clipped apart with ``algo.separate_clipping`` and a critic, else together."""
        actor, critic = self.model.actor_parameters(), self.model.critic_parameters()
        if self.algo.separate_clipping and critic:
            return [actor, critic]
        return [actor + critic]

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        algo = self.algo
        output = self.model.policy_forward(
            mb.input_ids,
            mb.attention_mask,
            mb.response_ids,
            temperature=self.rollout_cfg.temperature,
            with_values=self.model.has_critic,
            entropy="grad" if algo.entropy_coef else "detached",
            frozen_hidden=mb.frozen_hidden,
            sharing=mb.sharing,
            response_mask=mb.response_mask,
        )
        loss, stats = ppo_loss(
            loss_settings(algo, self.rollout_cfg.max_new_tokens),
            logprobs=output.logprobs,
            entropy=output.entropy,
            values=output.values if self.model.has_critic else None,
            old_logprobs=mb.old_logprobs,
            rollout_logprobs=mb.rollout_logprobs,
            ref_logprobs=mb.ref_logprobs,
            old_values=mb.values,
            advantages=mb.advantages,
            returns=mb.returns,
            response_mask=mb.response_mask,
        )
        return loss, {key: value.item() for key, value in stats.items()}

    def _metrics(
        self,
        rollout: RolloutBatch,
        scored: RewardOutput,
        experience: Experience,
        update_stats: dict[str, float],
        timings: dict[str, float],
    ) -> dict[str, float]:
        scores = torch.tensor(scored.scores)
        mask = experience.response_mask
        lengths = mask.sum(dim=1)
        total_time = sum(timings.values())
        metrics = {
            "reward/mean": scores.mean().item(),
            "reward/std": scores.std(unbiased=False).item(),
            "reward/accuracy": sum(scored.correct) / len(scored.correct),
            "reward/format_rate": sum(p.format_ok for p in scored.parsed) / len(scored.parsed),
            "response/text_before_think_rate": sum(bool(p.text_before_think) for p in scored.parsed)
            / len(scored.parsed),
            **{f"reward/{name}": sum(values) / len(values) for name, values in scored.components.items()},
            "response/tokens_mean": lengths.mean().item(),
            "response/tokens_max": lengths.max().item(),
            "response/truncated_rate": sum(r == "length" for r in rollout.finish_reasons) / len(rollout.finish_reasons),
            "kl/mean_per_sequence": core.masked_sum(experience.kl, mask, dim=1).mean().item(),
            "kl/mean_per_token": core.masked_mean(experience.kl, mask).item(),
            "perf/generate_tokens_per_s": rollout.num_response_tokens / max(timings["generate"], 1e-9),
            "perf/iteration_s": total_time,
        }
        if not self._reuses_rollout_logprobs(self.iteration):
            gap = core.masked_mean((experience.old_logprobs - experience.rollout_logprobs).abs(), mask)
            metrics["rollout/logprob_abs_diff"] = gap.item()
        if self.device.type == "cuda":  # the memory plan's prediction is checked against it (scripts/gpu_smoke.sh)
            metrics["perf/max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.model.has_critic:
            metrics["critic/values"] = core.masked_mean(experience.values, mask).item()
            metrics["critic/returns"] = core.masked_mean(experience.returns, mask).item()
            metrics["critic/explained_variance"] = core.explained_variance(experience.values, experience.returns, mask).item()
        metrics.update(format_error_shares(scored.parsed))
        metrics.update({f"loss/{k}": v for k, v in update_stats.items()})
        metrics.update({f"time/{k}_s": v for k, v in timings.items()})
        return metrics

    def _samples(
        self, rows: list[MCQExample], responses: list[str], scored: RewardOutput, iteration: int
    ) -> list[dict[str, Any]]:
        return [
            {
                "iteration": iteration,
                "id": row.id,
                "question": row.question,
                "answer": row.answer,
                "letters": row.letters,
                "options": row.options,
                "response": response,
                "score": score,
                "letter": parsed.letter,
                "correct": correct,
                "format_error": parsed.format_error,
            }
            for row, response, score, parsed, correct in zip(rows, responses, scored.scores, scored.parsed, scored.correct)
        ]
