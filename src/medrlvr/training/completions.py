"""The run's completion tables: one MLflow table across iterations (``completions.json``) and one per evaluation
set across steps (``eval/<set>.json``), each row a whole completion with its question, options and verdicts.

``MlflowClient.log_table`` appends rows to a table the run already has, so each logged iteration (or evaluation)
adds its rows; the UI's artifact view shows the table and ``mlflow.load_table`` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from medrlvr.analysis.callback import StageAnalysisCallback
from medrlvr.analysis.classifier import CompletionAnalysis
from medrlvr.data.schema import MCQExample

TRAINING_TABLE = "completions.json"
# a sample's fields copied into the table, in column order (the SFT samples have no reward or parse)
SAMPLE_COLUMNS = ("id", "question", "options", "response", "letter", "answer", "correct", "format_error")
# an evaluation record's fields copied into its table after the question (see medrlvr.evaluation.policy.evaluate)
EVAL_COLUMNS = (
    "response", "letter", "answer", "correct", "format_error", "text_before_think", "reasoning_words",
    "response_tokens", "finish_reason",
)


def options_text(options: Mapping[str, str]) -> str:
    """The options one per line, as the prompt shows them: ``A. text``."""
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def training_rows(samples: Sequence[Mapping[str, Any]], analyses: Sequence[CompletionAnalysis]) -> list[dict[str, Any]]:
    """One row per completion: ``iteration``, the :data:`SAMPLE_COLUMNS` the samples have, the classifier's
    ``stage`` and ``flags``, and ``reward`` (the score) when the samples were scored."""
    rows = []
    for sample, analysis in zip(samples, analyses, strict=True):
        row = {"iteration": sample["iteration"]}
        row |= {key: sample[key] for key in SAMPLE_COLUMNS if key in sample}
        if "options" in row:
            row["options"] = options_text(row["options"])
        row |= {"stage": analysis.stage.title, "flags": ",".join(analysis.flags())}
        if "score" in sample:
            row["reward"] = sample["score"]
        rows.append(row)
    return rows


def evaluation_rows(
    step: int, examples: Sequence[MCQExample], records: Sequence[Mapping[str, Any]], analyses: Sequence[CompletionAnalysis]
) -> list[dict[str, Any]]:
    """One row per evaluated completion at training ``step`` (0 = before training): ``step``, ``id``, ``question``,
    ``options``, the record's :data:`EVAL_COLUMNS` (``records`` index ``examples`` by ``question_index``) and the
    classifier's ``stage`` and ``flags`` (one analysis per record)."""
    rows = []
    for record, analysis in zip(records, analyses, strict=True):
        example = examples[record["question_index"]]
        row = {"step": step, "id": record["id"], "question": example.question, "options": options_text(example.options)}
        row |= {key: record[key] for key in EVAL_COLUMNS}
        rows.append(row | {"stage": analysis.stage.title, "flags": ",".join(analysis.flags())})
    return rows


def as_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows (same keys) as the column mapping ``log_table`` takes."""
    return {key: [row[key] for row in rows] for key in rows[0]}


class CompletionTableLogger(L.Callback):
    """Every ``every`` iterations (and at the first and last) appends up to ``max_rows`` of the iteration's
    completions to the run's ``completions.json`` table, with the stage and flags ``stages`` (which must run
    before it) gave them."""

    def __init__(self, every: int, max_rows: int, max_steps: int, stages: StageAnalysisCallback) -> None:
        self.every, self.max_rows, self.max_steps, self.stages = every, max_rows, max_steps, stages

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        iteration = pl_module.iteration
        due = self.every > 0 and (iteration % self.every == 0 or iteration in (1, self.max_steps))
        logger = trainer.logger
        samples = pl_module.last_samples[: self.max_rows]
        if not due or not isinstance(logger, MLFlowLogger) or not samples:
            return
        rows = training_rows(samples, self.stages.last_analyses[: self.max_rows])
        logger.experiment.log_table(logger.run_id, data=as_columns(rows), artifact_file=TRAINING_TABLE)
