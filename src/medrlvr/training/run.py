"""One training run from its config: take the output folder, open or resume the MLflow run, evaluate, fit
(RL iterations or SFT steps), evaluate and save the policy."""

from __future__ import annotations

import logging
import signal
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from medrlvr.analysis.callback import StageAnalysisCallback
from medrlvr.config import TrainConfig, to_train_config
from medrlvr.paths import default_tracking_uri
from medrlvr.data.compose import eval_set_params, set_name
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.registry import load_split
from medrlvr.data.schema import MCQExample
from medrlvr.mlflow_ui import mark_model_training
from medrlvr.policy_config import write_policy_config
from medrlvr.runtime import set_threads
from medrlvr.training import builders
from medrlvr.training.callbacks import ProgressPrinter
from medrlvr.training.checkpointing import (
    Checkpoint,
    CheckpointCallback,
    check_owner,
    checkpoint_root,
    resolve_resume,
)
from medrlvr.training.completions import CompletionTableLogger
from medrlvr.training.distributed import close_process_group
from medrlvr.training.figures import TrainingHistory, log_run_figures
from medrlvr.training.heldout_eval import EvaluateDuringTraining, evaluation_sets, run_evaluation, within_context
from medrlvr.training.model_logging import log_policy_model
from medrlvr.training.ppo_module import PPOModule
from medrlvr.training.preflight import check_output_dir, check_run_in_store, check_tracking_uri, output_dir_lock
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training.resume import Change, check_resume_config, describe
from medrlvr.training.run_record import NOTE_TAG, description, log_datasets, system_metrics
from medrlvr.training.run_tracking import open_run, reopen, terminal_status
from medrlvr.training.sft_module import SFTModule
from medrlvr.training.signals import Stopped, StopSignals
from medrlvr.training.strategies import build_strategy, gathered_parameters, zero3

log = logging.getLogger(__name__)


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


def run_training(dict_cfg: DictConfig, default_output_dir: str, overrides: list[str]) -> float:
    """Train with the composed config ``dict_cfg`` (in ``trainer.output_dir``, else ``default_output_dir``) under
    the output folder's lock and the stop signals, closing the process group at the end; ``overrides`` are the
    command line's. Returns the accuracy on ``data.eval_split`` after training (the default sweep objective), or
    the last iteration's ``reward/accuracy`` without that evaluation."""
    cfg = to_train_config(dict_cfg)
    output_dir = check_output_dir(Path(cfg.trainer.output_dir or default_output_dir).resolve())
    with output_dir_lock_on_main(output_dir), StopSignals().installed() as signals:
        command = " ".join(["python -m medrlvr.train", *overrides])
        try:
            metrics = train(cfg, output_dir, OmegaConf.to_yaml(dict_cfg, resolve=True), signals, command)
        finally:
            close_process_group()
    return metrics.get(f"eval/{set_name(cfg.data.name, cfg.data.eval_split)}/accuracy", metrics.get("reward/accuracy", 0.0))
