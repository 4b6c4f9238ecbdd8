"""Train a policy on medical MCQA with PPO (default) or the SFT baseline (``algo=sft``):
``python -m medrlvr.train [hydra overrides]``."""

from __future__ import annotations

import logging
import os
import signal
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler
from transformers import PreTrainedTokenizerBase

from medrlvr.analysis.callback import StageAnalysisCallback
from medrlvr.analysis.classifier import classify
from medrlvr.analysis.dynamics import StageTracker
from medrlvr.cli import error_boundary
from medrlvr.config import TrainConfig, config_dir, default_tracking_uri, register_configs, to_train_config
from medrlvr.data.compose import eval_set_params, heldout_sets, set_name
from medrlvr.data.lengths import fit_to_context
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.registry import load_heldout_split, load_split
from medrlvr.data.schema import ExampleBatch, MCQExample
from medrlvr.data.transforms import shuffled_per_draw
from medrlvr.evaluation import evaluate
from medrlvr.mlflow_ui import mark_model_training
from medrlvr.policy_config import write_policy_config
from medrlvr.rollout.base import RolloutEngine
from medrlvr.training import builders
from medrlvr.training.callbacks import ProgressPrinter
from medrlvr.training.checkpointing import (
    Checkpoint,
    CheckpointCallback,
    check_owner,
    checkpoint_root,
    resolve_resume,
)
from medrlvr.training.completions import CompletionTableLogger, as_columns, evaluation_rows
from medrlvr.training.distributed import close_process_group, rank_order
from medrlvr.training.figures import TrainingHistory, log_run_figures
from medrlvr.training.model_logging import log_policy_model
from medrlvr.training.ppo_module import PPOModule
from medrlvr.training.preflight import check_output_dir, check_run_in_store, check_tracking_uri, output_dir_lock
from medrlvr.training.resume import Change, check_resume_config, describe
from medrlvr.training.run_record import NOTE_TAG, description, log_datasets, system_metrics
from medrlvr.training.sft_module import SFTModule
from medrlvr.training.signals import Stopped, StopSignals
from medrlvr.training.strategies import build_strategy, gathered_parameters, zero3
from medrlvr.training.tracking import open_run, reopen, terminal_status

log = logging.getLogger(__name__)
register_configs()
def set_threads(num_threads: int) -> int:
    """Size torch's thread pool to the free cores (0 = every core this process may use)."""
    threads = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def prompt_loader(
    examples: list[MCQExample],
    batch_size: int,
    iterations: int,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_options: bool = False,
) -> DataLoader:
    """Batches ``start + 1`` to ``iterations`` of prompts, reshuffled (seeded) each pass over the data.

    The order depends only on ``seed``, so a run resumed at ``start`` sees the batches it had not reached.
    With ``world_size`` processes, each iteration draws ``batch_size × world_size`` prompts and process
    ``rank`` gets its own ``batch_size`` of them. ``shuffle_options`` re-shuffles a question's options each time
    it is drawn (``data.shuffle_options_each_epoch``, :func:`medrlvr.data.transforms.shuffled_per_draw`).
    """
    block = batch_size * world_size
    sampler = RandomSampler(
        examples, replacement=False, num_samples=block * iterations, generator=torch.Generator().manual_seed(seed)
    )
    indices = list(sampler)
    drawn = shuffled_per_draw(examples, indices, seed) if shuffle_options else [examples[i] for i in indices]
    order = rank_order(list(range(len(indices)))[start * block :], batch_size, rank, world_size)
    return DataLoader([drawn[i] for i in order], batch_size=batch_size, shuffle=False, collate_fn=ExampleBatch)


def evaluation_sets(cfg: TrainConfig) -> dict[str, list[MCQExample]]:
    """The held-out examples evaluated during training, by metric name (``eval/<name>/*``, see
    :func:`medrlvr.data.compose.heldout_sets`): the first ``data.eval_size`` of each set, with their published
    options (``data.option_count`` applies to training only). Empty sets are left out."""
    sets = {
        name: load_heldout_split(data, split)[: cfg.data.eval_size]
        for name, (data, split) in heldout_sets(cfg.data, cfg.trainer.eval_ood).items()
    }
    return {name: examples for name, examples in sets.items() if examples}


def within_context(
    cfg: TrainConfig, prompts: PromptBuilder, train_examples: list[MCQExample], eval_sets: dict[str, list[MCQExample]]
) -> tuple[list[MCQExample], dict[str, list[MCQExample]]]:
    """The training and evaluation questions whose prompt fits the model's context with
    ``rollout.max_new_tokens`` (evaluation: ``rollout.eval_max_new_tokens``); see :func:`fit_to_context`."""
    context = builders.model_context(cfg.model, cfg.rollout)
    if context is None:
        log.warning("model.name_or_path=%s: its config gives no context length; prompt lengths are not checked",
                    cfg.model.name_or_path)
        return train_examples, eval_sets
    tokens, skip, rollout = builders.prompt_token_counter(prompts), cfg.data.skip_long_prompts, cfg.rollout
    train = fit_to_context(train_examples, tokens, context, rollout.max_new_tokens, "rollout.max_new_tokens", skip)
    evals = {
        name: fit_to_context(
            examples, tokens, context, rollout.eval_max_new_tokens, "rollout.eval_max_new_tokens", skip
        )
        for name, examples in eval_sets.items()
    }
    return train, evals


def run_evaluation(
    name: str,
    engine: RolloutEngine,
    prompts: PromptBuilder,
    examples: list[MCQExample],
    cfg: TrainConfig,
    logger: MLFlowLogger,
    step: int,
    after_exploit: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy evaluation on held-out examples at training step ``step`` (0 = before training), logged as
    ``eval/<name>/*`` metrics at that step and as rows of the table ``eval/<name>.json`` with each completion's
    stage and flags (``after_exploit``: training has had its exploit phase, see :class:`StageTracker`);
    returns the metrics and the completions' records."""
    rules = builders.parse_rules(cfg.reward)
    result = evaluate(
        engine, prompts, examples, cfg.rollout.eval_max_new_tokens, tuple(cfg.rollout.stop_strings), rules=rules
    )
    metrics = {f"eval/{name}/{key}": value for key, value in result.metrics.items()}
    logger.log_metrics(metrics, step=step)
    questions = [examples[record["question_index"]] for record in result.records]
    analyses = [
        classify(record["response"], question.letters, cfg.analysis, after_exploit, rules, question.options)
        for record, question in zip(result.records, questions)
    ]
    rows = evaluation_rows(step, examples, result.records, analyses)
    logger.experiment.log_table(logger.run_id, data=as_columns(rows), artifact_file=f"eval/{name}.json")
    log.info(
        "eval %s at step %d: accuracy %.3f | format %.3f | %d completions",
        name,
        step,
        result.metrics["accuracy"],
        result.metrics["format_rate"],
        len(result.records),
    )
    return metrics, result.records


class EvaluateDuringTraining(L.Callback):
    """The evaluations on the first process while fit runs: at step 0 before training (``before``) and after
    every ``every`` iterations but the last (:func:`_fit_and_evaluate` evaluates after training). A vLLM rollout
    engine exists only once fit has started (it joins the process group the strategy sets up in fit). ``tracker``
    is the training stage classifier's, whose exploit phase the evaluated completions' stages follow."""

    def __init__(
        self, eval_sets: dict[str, list[MCQExample]], prompts: PromptBuilder, cfg: TrainConfig, logger: MLFlowLogger,
        before: bool, every: int | None, last_step: int, tracker: StageTracker,
    ) -> None:
        self.eval_sets, self.prompts, self.cfg, self.logger = eval_sets, prompts, cfg, logger
        self.before, self.every, self.last_step, self.tracker = before, every, last_step, tracker
        self.before_records: dict[str, list[dict[str, Any]]] = {}

    def evaluate(self, pl_module: Any, step: int) -> None:
        after_exploit = self.tracker.exploit_phase_at is not None
        for name, examples in self.eval_sets.items():
            _, records = run_evaluation(
                name, pl_module.engine, self.prompts, examples, self.cfg, self.logger, step, after_exploit
            )
            if step == 0:
                self.before_records[name] = records

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before and trainer.is_global_zero:
            self.evaluate(pl_module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = pl_module.iteration
        if self.every and step % self.every == 0 and step < self.last_step and trainer.is_global_zero:
            self.evaluate(pl_module, step)


def save_policy(
    module: PPOModule | SFTModule, tokenizer: PreTrainedTokenizerBase, prompts: PromptBuilder, cfg: TrainConfig,
    output_dir: Path, logger: MLFlowLogger | None, main_process: bool = True, gather: bool = False,
) -> Path:
    """Save the trained policy (LoRA merged) in Hugging Face format with its training config
    (``medrlvr_config.yaml``, read by ``medrlvr.evaluate``) and log it to MLflow as a model
    (``trainer.log_model``), from the main process; ``gather`` first collects ZeRO-3's partitioned weights
    (every process must call)."""
    folder = output_dir / "policy"
    policy, adapters = module.merged_policy(), module.lora_policy()
    with gathered_parameters(policy, gather), gathered_parameters(adapters, gather and adapters is not None):
        if main_process:
            policy.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            write_policy_config(folder, cfg)
        if logger is not None and main_process:
            log_policy_model(
                logger._tracking_uri, logger.run_id, cfg.trainer.log_model, policy, adapters, tokenizer, prompts,
                cfg.model.name_or_path, cfg.rollout.eval_max_new_tokens,
            )
    return folder


def run_config(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain values: the run's params, and the config saved in each checkpoint."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def record_overrides(logger: MLFlowLogger, overrides: dict[str, Change], resolved_yaml: str, start: int) -> None:
    """Record settings changed on resume (the params keep the first values): tag ``resume/overrides`` and the
    new config as the artifact ``config_resumed_at_iter_XXXXX.yaml``."""
    if not overrides:
        return
    log.info("resuming with changed settings: %s", describe(overrides))
    logger.experiment.set_tag(logger.run_id, "resume/overrides", describe(overrides)[:5000])
    logger.experiment.log_text(logger.run_id, resolved_yaml, f"config_resumed_at_iter_{start:05d}.yaml")


def train(
    cfg: TrainConfig, output_dir: Path, resolved_yaml: str, signals: StopSignals | None = None,
    command: str | None = None,
) -> dict[str, float]:
    """Run one training: evaluate, fit (RL iterations or SFT steps), evaluate, save. Returns final metrics.

    ``signals``, when the caller installed it, stops training on SIGINT or SIGTERM; ``command``, the command line
    that started the run, goes into the run's description."""
    signals = signals or StopSignals()
    threads = set_threads(cfg.trainer.num_threads)
    L.seed_everything(cfg.seed, workers=True)
    tracking_uri = cfg.logger.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    checkpoint = resolve_resume(cfg.resume, output_dir)
    check_owner(checkpoint_root(output_dir), checkpoint.run_id if checkpoint else None)
    overrides = check_resume_config(checkpoint, run_config(cfg)) if checkpoint else {}
    if checkpoint is not None and checkpoint.run_id is not None and rank_zero_only.rank == 0:
        check_run_in_store(tracking_uri, checkpoint.run_id, checkpoint.path)
    start = checkpoint.iteration if checkpoint else 0
    train_examples = load_split(cfg.data, cfg.data.train_split, cfg.seed)
    eval_sets = evaluation_sets(cfg)
    tokenizer = builders.build_tokenizer(cfg.model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    train_examples, eval_sets = within_context(cfg, prompts, train_examples, eval_sets)
    module, _ = builders.build_module(cfg, tokenizer, prompts, start, len(train_examples))
    if rank_zero_only.rank != 0:  # other processes of a multi-process run (their rank comes from the launcher)
        return _fit_and_evaluate(
            cfg, output_dir, module, prompts, tokenizer, None, train_examples, eval_sets, checkpoint, signals
        )
    tags = {"algo": cfg.algo.name, "reward": cfg.reward.name, **{t: "1" for t in cfg.tags}}
    logger = builders.build_logger(cfg.logger, tags, run_id=checkpoint.run_id if checkpoint else None)
    run_id = open_run(logger)
    mark_model_training(logger.experiment, logger.experiment_id)
    if checkpoint is None:
        logger.log_hyperparams(run_config(cfg))
        logger.log_hyperparams(eval_set_params(cfg.data, cfg.trainer.eval_ood))
        logger.experiment.log_text(run_id, resolved_yaml, "config.yaml")
        logger.experiment.set_tag(run_id, NOTE_TAG, description(cfg, list(eval_sets), command))
        log_datasets(logger.experiment, run_id, cfg, train_examples, eval_sets)
    else:
        reopen(logger.experiment, run_id)
        log.info("resuming from %s (iteration %d)", checkpoint.path, start)
        record_overrides(logger, overrides, resolved_yaml, start)
    log.info("MLflow run %s in %s (torch threads: %d)", run_id, logger._tracking_uri, threads)
    with terminal_status(logger), system_metrics(cfg.trainer.log_system_metrics, run_id, tracking_uri, checkpoint is not None):
        final = _fit_and_evaluate(
            cfg, output_dir, module, prompts, tokenizer, logger, train_examples, eval_sets, checkpoint, signals
        )
    logger.finish()
    return final


def _fit_and_evaluate(
    cfg: TrainConfig,
    output_dir: Path,
    module: PPOModule | SFTModule,
    prompts: PromptBuilder,
    tokenizer: PreTrainedTokenizerBase,
    logger: MLFlowLogger | None,
    train_examples: list[MCQExample],
    eval_sets: dict[str, list[MCQExample]],
    checkpoint: Checkpoint | None,
    signals: StopSignals,
) -> dict[str, float]:
    """Evaluate (unless resuming; when fit starts), fit the remaining iterations with checkpoints, evaluate,
    save the policy. A signal during an iteration stops training after it (with a checkpoint) and raises
    :class:`Stopped`.

    With several processes only the first has a ``logger`` (MLflow) and evaluates; all of them train.
    """
    start = checkpoint.iteration if checkpoint else 0
    batch_size, steps = builders.training_schedule(cfg, len(train_examples))
    final: dict[str, float] = {}
    checkpoints = CheckpointCallback(
        checkpoint_root(output_dir), cfg.trainer.checkpoint_every, cfg.trainer.keep_checkpoints, steps, checkpoint,
        signals, run_config(cfg),
    )
    history = TrainingHistory()
    stages = StageAnalysisCallback(cfg.analysis, cfg.trainer.log_samples_every, steps, builders.parse_rules(cfg.reward))
    callbacks: list[L.Callback] = [
        ProgressPrinter(steps),
        stages,  # before the completion table, which shows its stages and flags
        CompletionTableLogger(cfg.trainer.log_samples_every, cfg.logger.samples_per_table, steps, stages),
        history,
    ]
    during = None
    if logger is not None and not zero3(cfg.trainer):
        before = cfg.trainer.eval_before and checkpoint is None
        during = EvaluateDuringTraining(
            eval_sets, prompts, cfg, logger, before, cfg.trainer.eval_every, steps, stages.tracker
        )
        callbacks.append(during)
    callbacks.append(checkpoints)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=build_strategy(cfg),
        precision=cfg.trainer.precision,  # type: ignore[arg-type]
        max_epochs=1,
        logger=logger or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(output_dir),
        log_every_n_steps=1,
        use_distributed_sampler=False,  # prompt_loader gives each process its own prompts
    )
    # Evaluation runs in the main process only; under ZeRO-3 no process holds the whole model, so it is
    # left to `python -m medrlvr.evaluate` on the saved policy.
    evaluate_here = logger is not None and trainer.is_global_zero and not zero3(cfg.trainer)
    if zero3(cfg.trainer) and (cfg.trainer.eval_before or cfg.trainer.eval_after or cfg.trainer.eval_every):
        log.warning("ZeRO-3: skipping evaluation during training; run python -m medrlvr.evaluate on the saved policy")
    if start < steps:
        loader = prompt_loader(
            train_examples, batch_size, steps, cfg.seed, start, trainer.global_rank, trainer.world_size,
            cfg.data.shuffle_options_each_epoch,
        )
        fit(trainer, module, loader, signals)
    if checkpoints.stop_signal is not None:
        raise Stopped(
            checkpoints.stop_signal,
            f"interrupted after iteration {module.iteration} by {signal.Signals(checkpoints.stop_signal).name};"
            f" checkpoint {checkpoints.last_saved}",
        )
    final.update({k: v for k, v in module.last_metrics.items() if k.startswith("reward/")})
    evaluations = {name: {"before": records} for name, records in (during.before_records if during else {}).items()}
    if cfg.trainer.eval_after and evaluate_here:
        after_exploit = stages.tracker.exploit_phase_at is not None
        for name, examples in eval_sets.items():
            metrics, records = run_evaluation(name, module.engine, prompts, examples, cfg, logger, steps, after_exploit)
            final.update(metrics)
            evaluations.setdefault(name, {})["after"] = records
    if logger is not None and trainer.is_global_zero:
        log_run_figures(
            logger.experiment, logger.run_id, history.curves, stages.fractions, evaluations,
            cfg.analysis.boundary_min_iterations,
        )
    if cfg.trainer.save_model:
        folder = save_policy(
            module, tokenizer, prompts, cfg, output_dir, logger, trainer.is_global_zero, zero3(cfg.trainer)
        )
        if trainer.is_global_zero:
            log.info("saved policy to %s", folder)
    return final


def output_dir_lock_on_main(output_dir: Path) -> AbstractContextManager[None]:
    """The output folder's lock, taken by the first process only (the others of a multi-process run share it)."""
    return output_dir_lock(output_dir) if rank_zero_only.rank == 0 else nullcontext()


def fit(trainer: L.Trainer, module: L.LightningModule, loader: DataLoader, signals: StopSignals) -> None:
    """``trainer.fit``, ending normally when a signal stopped it: Lightning raises its ``SIGTERMException`` after
    the iteration in which SIGTERM arrived, once the checkpoint is saved."""
    try:
        trainer.fit(module, loader)
    except SIGTERMException:
        if signals.requested is None:
            raise
    finally:
        signals.deferring = False


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def main(dict_cfg: DictConfig) -> float:
    """Hydra entry point; returns the accuracy on ``data.eval_split`` after training (the default sweep objective),
    or the last iteration's ``reward/accuracy`` without that evaluation."""
    with error_boundary():
        cfg = to_train_config(dict_cfg)
        output_dir = check_output_dir(Path(cfg.trainer.output_dir or HydraConfig.get().runtime.output_dir).resolve())
        with output_dir_lock_on_main(output_dir), StopSignals().installed() as signals:
            command = " ".join(["python -m medrlvr.train", *HydraConfig.get().overrides.task])
            try:
                metrics = train(cfg, output_dir, OmegaConf.to_yaml(dict_cfg, resolve=True), signals, command)
            finally:
                close_process_group()
    return metrics.get(f"eval/{set_name(cfg.data.name, cfg.data.eval_split)}/accuracy", metrics.get("reward/accuracy", 0.0))


if __name__ == "__main__":
    main()
