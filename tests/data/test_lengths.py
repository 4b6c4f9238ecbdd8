"""Questions longer than the model's context: refused naming the question, or left out with a report."""

import logging

import pytest

from medrlvr.data.lengths import fit_to_context
from medrlvr.data.schema import DatasetError, MCQExample


def example(id: str, words: int) -> MCQExample:
    return MCQExample(question=" ".join(["word"] * words), options={"A": "a", "B": "b"}, answer="A",
                      source="medqa.jsonl", id=id)


def words(e: MCQExample) -> int:
    return len(e.question.split())


EXAMPLES = [example("q1", 10), example("q2", 95), example("q3", 90)]


def test_questions_that_fit_with_the_new_tokens_pass_unchanged():
    assert fit_to_context(EXAMPLES, words, 100, 5, "rollout.max_new_tokens", skip=False) == EXAMPLES


def test_a_question_too_long_is_refused_naming_it_and_the_option():
    with pytest.raises(DatasetError) as err:
        fit_to_context(EXAMPLES, words, 100, 8, "rollout.max_new_tokens", skip=False)
    assert str(err.value) == (
        "medqa.jsonl: question q2: prompt of 95 tokens + rollout.max_new_tokens=8 exceeds the model's context of"
        " 100 tokens (set data.skip_long_prompts=true to leave such questions out)"
    )


def test_skipping_leaves_out_the_long_questions_and_says_which(caplog):
    with caplog.at_level(logging.WARNING):
        kept = fit_to_context(EXAMPLES, words, 100, 8, "rollout.eval_max_new_tokens", skip=True)
    assert [e.id for e in kept] == ["q1", "q3"]
    assert "medqa.jsonl: left out 1 of 3 question(s) longer than the model's context of 100 tokens" in caplog.text
    assert "q2 (95 tokens)" in caplog.text


def test_skipping_every_question_is_an_error():
    with pytest.raises(DatasetError, match="no question fits the model's context of 5 tokens"):
        fit_to_context(EXAMPLES, words, 5, 1, "rollout.max_new_tokens", skip=True)
