"""Completion tables: one MLflow table across iterations, read back by ``mlflow.load_table`` from a real store."""

from types import SimpleNamespace

import pandas as pd
import pytest
from lightning.pytorch.loggers import MLFlowLogger

from medrlvr.analysis.callback import StageAnalysisCallback
from medrlvr.analysis.classifier import classify
from medrlvr.config import AnalysisConfig
from medrlvr.data.schema import MCQExample
from medrlvr.training.completions import TRAINING_TABLE, CompletionTableLogger, evaluation_rows, options_text

GOOD = "<think>Low ferritin means the iron stores are empty, so the anaemia is iron deficiency.</think><answer>B</answer>"
EXAMPLE = MCQExample("Which anaemia?", {"A": "Folate", "B": "Iron"}, "B", "bundled", "q7")


def sample(iteration, response, score, letter, correct):
    return {
        "iteration": iteration, "id": "q7", "question": EXAMPLE.question, "answer": "B", "letters": "AB",
        "options": EXAMPLE.options, "response": response, "score": score, "letter": letter, "correct": correct,
        "format_error": None if letter else "missing_tags",
    }


def test_options_are_one_per_line_as_in_the_prompt():
    assert options_text({"A": "Folate", "B": "Iron"}) == "A. Folate\nB. Iron"


@pytest.mark.slow  # about 30 s on the shared CPU (MLflow store creation and artifact round trips)
def test_the_training_table_grows_by_iteration_and_loads_back_whole(tmp_path, load_mlflow_table):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="tables", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    trainer = SimpleNamespace(logger=logger)
    stages = StageAnalysisCallback(AnalysisConfig(), every=0, max_steps=3)
    table = CompletionTableLogger(every=2, max_rows=2, max_steps=3, stages=stages)
    batches = {1: [sample(1, "Iron.", -1.0, None, False)] * 3, 2: [sample(2, GOOD, 1.0, "B", True)], 3: []}
    for iteration, samples in batches.items():
        module = SimpleNamespace(last_samples=samples, iteration=iteration)
        stages.on_train_batch_end(trainer, module, None, None, iteration - 1)
        table.on_train_batch_end(trainer, module, None, None, iteration - 1)
    rows = load_mlflow_table(uri, logger.experiment_id, logger.run_id, TRAINING_TABLE)
    assert [row["iteration"] for row in rows] == [1, 1, 2]  # 2 of iteration 1's 3 rows; iteration 3 had none
    assert list(rows[0]) == [
        "iteration", "id", "question", "options", "response", "letter", "answer", "correct", "format_error",
        "stage", "flags", "reward",
    ]
    first, last = rows[0], rows[2]
    assert (first["question"], first["options"], first["response"]) == ("Which anaemia?", "A. Folate\nB. Iron", "Iron.")
    assert (first["stage"], first["flags"], first["reward"], first["correct"]) == (
        "1 Format Failure", "format_failure", -1.0, False
    )
    assert first["format_error"] == "missing_tags" and pd.isna(first["letter"])  # None reads back as NaN
    assert (last["response"], last["letter"], last["correct"], last["reward"]) == (GOOD, "B", True, 1.0)
    assert pd.isna(last["format_error"]) and last["stage"] == "3 Concise Structurer"


def test_evaluation_rows_carry_the_step_and_the_question():
    record = {
        "id": "q7", "question_index": 0, "sample": 0, "num_options": 2, "answer": "B", "response": GOOD, "letter": "B",
        "format_error": None, "text_before_think": False, "correct": True, "reasoning_words": 13,
        "response_tokens": 20, "finish_reason": "stop",
    }
    analysis = classify(GOOD, "AB", AnalysisConfig())
    (row,) = evaluation_rows(4, [EXAMPLE], [record], [analysis])
    assert row == {
        "step": 4, "id": "q7", "question": "Which anaemia?", "options": "A. Folate\nB. Iron", "response": GOOD,
        "letter": "B", "answer": "B", "correct": True, "format_error": None, "text_before_think": False,
        "reasoning_words": 13, "response_tokens": 20, "finish_reason": "stop", "stage": "3 Concise Structurer",
        "flags": "",
    }
    with pytest.raises(IndexError):
        evaluation_rows(4, [], [record], [analysis])
