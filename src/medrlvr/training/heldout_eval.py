"""Training's evaluations on held-out sets: which questions, one logged evaluation, and the callback that
runs them while fit runs."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from medrlvr.analysis.classifier import classify
from medrlvr.analysis.dynamics import StageTracker
from medrlvr.config import TrainConfig
from medrlvr.data.compose import heldout_sets
from medrlvr.data.lengths import fit_to_context
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.registry import load_heldout_split
from medrlvr.data.schema import MCQExample
from medrlvr.evaluation.policy import evaluate
from medrlvr.rollout.base import RolloutEngine
from medrlvr.training import builders
from medrlvr.training.completions import as_columns, evaluation_rows

log = logging.getLogger(__name__)


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
    every ``every`` iterations but the last (:mod:`medrlvr.training.run` evaluates after training). A vLLM rollout
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
        """Evaluate every set at ``step``, keeping the completions of step 0 (the base model)."""
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
