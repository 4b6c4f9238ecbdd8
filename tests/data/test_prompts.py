"""Prompt templates: the model's chat template or DeepSeek-R1-Zero's plain text, with or without a pre-fill."""

import pytest

from medrlvr.data.prompts import EXAMPLE_QUESTION, R1_SYSTEM_PROMPT, PromptBuilder, format_question

QUESTION = EXAMPLE_QUESTION


def test_r1_zero_template_is_plain_user_assistant_text(tokenizer):
    prompt = PromptBuilder(tokenizer, one_shot=False, reminder="", response_prefix="", template="r1_zero")(QUESTION)
    assert prompt == f"{R1_SYSTEM_PROMPT} User: {format_question(QUESTION)} Assistant:"


def test_r1_zero_template_ignores_the_chat_template_and_keeps_the_pre_fill(tokenizer):
    assert tokenizer.chat_template  # the tiny tokenizer has one: r1_zero must not use it
    prompt = PromptBuilder(tokenizer, one_shot=False, response_prefix="<think>", template="r1_zero")(QUESTION)
    assert prompt.startswith(R1_SYSTEM_PROMPT + " User: ") and prompt.endswith(" Assistant:<think>")
    assert "<|im_start|>" not in prompt


def test_r1_zero_worked_example_is_one_more_exchange(tokenizer):
    prompt = PromptBuilder(tokenizer, one_shot=True, response_prefix="", template="r1_zero")(QUESTION)
    assert prompt.count(" User: ") == 2 and prompt.count(" Assistant: <think>") == 1
    assert prompt.endswith("Assistant:")


def test_chat_template_stays_the_default(tokenizer):
    builder = PromptBuilder(tokenizer)
    prompt = builder(QUESTION)
    expected = tokenizer.apply_chat_template(builder.messages(QUESTION), tokenize=False, add_generation_prompt=True)
    assert prompt == expected + "<think>"
    assert builder.full_response("x</think>") == "<think>x</think>"


def test_no_pre_fill_leaves_the_response_as_generated(tokenizer):
    builder = PromptBuilder(tokenizer, response_prefix="", template="r1_zero")
    assert builder.full_response("Step 1 <think>x</think>") == "Step 1 <think>x</think>"


def test_unknown_template_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="unknown prompt template 'r1'"):
        PromptBuilder(tokenizer, template="r1")
