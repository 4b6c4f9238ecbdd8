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
from medrlvr.cli import error_boundary
from medrlvr.config import TrainConfig, config_dir, default_tracking_uri, register_configs, to_train_config
from medrlvr.data.compose import eval_set_configs, eval_set_params
from medrlvr.data.lengths import fit_to_context
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.registry import load_heldout_split, load_split
from medrlvr.data.schema import ExampleBatch, MCQExample
from medrlvr.evaluation import evaluate
from medrlvr.mlflow_ui import mark_model_training
from medrlvr.policy_config import write_policy_config
from medrlvr.rollout.base import RolloutEngine
from medrlvr.training import builders
from medrlvr.training.callbacks import ProgressPrinter, SampleTableLogger
from medrlvr.training.checkpointing import (
    Checkpoint,
    CheckpointCallback,
    check_owner,
    checkpoint_root,
    resolve_resume,
)
from medrlvr.training.figures import TrainingHistory, log_run_figures
from medrlvr.training.model_logging import log_policy_model
from medrlvr.training.preflight import check_output_dir, check_run_in_store, check_tracking_uri, output_dir_lock
from medrlvr.training.distributed import rank_order
from medrlvr.training.strategies import build_strategy, gathered_parameters, zero3
from medrlvr.training.tracking import open_run, reopen, terminal_status
from medrlvr.training.ppo_module import PPOModule
from medrlvr.training.resume import Change, check_resume_config, describe
from medrlvr.training.signals import StopSignals, Stopped
from medrlvr.training.sft_module import SFTModule

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
) -> DataLoader:
    """Batches ``start + 1`` to ``iterations`` of prompts, reshuffled (seeded) each pass over the data.

    The order depends only on ``seed``, so a run resumed at ``start`` sees the batches it had not reached.
    With ``world_size`` processes, each iteration draws ``batch_size × world_size`` prompts and process
    ``rank`` gets its own ``batch_size`` of them.
    """
    block = batch_size * world_size
    sampler = RandomSampler(
        examples, replacement=False, num_samples=block * iterations, generator=torch.Generator().manual_seed(seed)
    )
    order = rank_order(list(sampler)[start * block :], batch_size, rank, world_size)
    return DataLoader([examples[i] for i in order], batch_size=batch_size, shuffle=False, collate_fn=ExampleBatch)


def evaluation_sets(cfg: TrainConfig) -> dict[str, list[MCQExample]]:
    """The held-out examples evaluated before and after training, by metric-name suffix: ``""`` for the first
    ``data.eval_size`` of ``data.eval_split``, ``"_ood"`` for those of ``data.ood_split`` when
    ``trainer.eval_ood``, and ``"_<name>"`` for those of each of ``data.eval_sets``' ``test_split``, with their
    published options (``data.option_count`` applies to training only). Empty sets are left out."""
    splits = {"": cfg.data.eval_split, **({"_ood": cfg.data.ood_split} if cfg.trainer.eval_ood else {})}
    sets = {suffix: load_heldout_split(cfg.data, split)[: cfg.data.eval_size] for suffix, split in splits.items()}
    for name, data in eval_set_configs(cfg.data).items():
        sets[f"_{name}"] = load_heldout_split(data, data.test_split)[: cfg.data.eval_size]
    return {suffix: examples for suffix, examples in sets.items() if examples}


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
        suffix: fit_to_context(
            examples, tokens, context, rollout.eval_max_new_tokens, "rollout.eval_max_new_tokens", skip
        )
        for suffix, examples in eval_sets.items()
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
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy evaluation on held-out examples, logged as ``eval/<name>/*`` metrics and a table; returns the
    metrics and the completions' records."""
    result = evaluate(
        engine, prompts, examples, cfg.rollout.eval_max_new_tokens, tuple(cfg.rollout.stop_strings),
        rules=builders.parse_rules(cfg.reward),
    )
    metrics = {f"eval/{name}/{key}": value for key, value in result.metrics.items()}
    logger.log_metrics(metrics, step=step)
    table = {key: [record[key] for record in result.records] for key in result.records[0]}
    logger.experiment.log_table(logger.run_id, data=table, artifact_file=f"eval/{name}.json")
    log.info(
        "eval %s: accuracy %.3f | format %.3f | %d completions",
        name,
        result.metrics["accuracy"],
        result.metrics["format_rate"],
        len(result.records),
    )
    return metrics, result.records


class EvaluateBeforeTraining(L.Callback):
    """The evaluation before training, on the first process once fit has started: a vLLM rollout engine
    exists only from then on (it joins the process group the strategy sets up in fit)."""

    def __init__(
        self, eval_sets: dict[str, list[MCQExample]], prompts: PromptBuilder, cfg: TrainConfig, logger: MLFlowLogger
    ) -> None:
        self.eval_sets, self.prompts, self.cfg, self.logger = eval_sets, prompts, cfg, logger
        self.metrics: dict[str, float] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for suffix, examples in self.eval_sets.items():
            name = f"before{suffix}"
            metrics, self.records[suffix] = run_evaluation(
                name, pl_module.engine, self.prompts, examples, self.cfg, self.logger, 0
            )
            self.metrics.update(metrics)


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
    cfg: TrainConfig, output_dir: Path, resolved_yaml: str, signals: StopSignals | None = None
) -> dict[str, float]:
    """Run one training: evaluate, fit (RL iterations or SFT steps), evaluate, save. Returns final metrics.

    ``signals``, when the caller installed it, stops training on SIGINT or SIGTERM."""
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
        logger.log_hyperparams(eval_set_params(cfg.data))
        logger.experiment.log_text(run_id, resolved_yaml, "config.yaml")
    else:
        reopen(logger.experiment, run_id)
        log.info("resuming from %s (iteration %d)", checkpoint.path, start)
        record_overrides(logger, overrides, resolved_yaml, start)
    log.info("MLflow run %s in %s (torch threads: %d)", run_id, logger._tracking_uri, threads)
    with terminal_status(logger):
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
    """Evaluate (unless resuming; when fit starts), fit the remaining iterations with checkpoints (RL), evaluate,
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
        SampleTableLogger(cfg.trainer.log_samples_every, cfg.logger.samples_per_table, steps),
        stages,
        history,
    ]
    before = None
    if cfg.trainer.eval_before and checkpoint is None and logger is not None and not zero3(cfg.trainer):
        before = EvaluateBeforeTraining(eval_sets, prompts, cfg, logger)
        callbacks.append(before)
    if isinstance(module, PPOModule):
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
    if zero3(cfg.trainer) and (cfg.trainer.eval_before or cfg.trainer.eval_after):
        log.warning("ZeRO-3: skipping evaluation during training; run python -m medrlvr.evaluate on the saved policy")
    if start < steps:
        loader = prompt_loader(train_examples, batch_size, steps, cfg.seed, start, trainer.global_rank, trainer.world_size)
        fit(trainer, module, loader, signals)
    if checkpoints.stop_signal is not None:
        raise Stopped(
            checkpoints.stop_signal,
            f"interrupted after iteration {module.iteration} by {signal.Signals(checkpoints.stop_signal).name};"
            f" checkpoint {checkpoints.last_saved}",
        )
    final.update(before.metrics if before else {})
    final.update({k: v for k, v in module.last_metrics.items() if k.startswith("reward/")})
    evaluations = {suffix: {"before": records} for suffix, records in (before.records if before else {}).items()}
    if cfg.trainer.eval_after and evaluate_here:
        for suffix, examples in eval_sets.items():
            metrics, records = run_evaluation(f"after{suffix}", module.engine, prompts, examples, cfg, logger, steps)
            final.update(metrics)
            evaluations.setdefault(suffix, {})["after"] = records
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
    """Hydra entry point; returns held-out accuracy after training (the default sweep objective)."""
    with error_boundary():
        cfg = to_train_config(dict_cfg)
        output_dir = check_output_dir(Path(cfg.trainer.output_dir or HydraConfig.get().runtime.output_dir).resolve())
        with output_dir_lock_on_main(output_dir), StopSignals().installed() as signals:
            metrics = train(cfg, output_dir, OmegaConf.to_yaml(dict_cfg, resolve=True), signals)
    return metrics.get("eval/after/accuracy", metrics.get("reward/accuracy", 0.0))


if __name__ == "__main__":
    main()
