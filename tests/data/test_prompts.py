"""Prompt templates: the model's chat template or DeepSeek-R1-Zero's plain text, with or without a pre-fill."""

import pytest

from medrlvr.data.prompts import (
    DIRECT_PREFIX,
    DIRECT_REMINDER,
    EXAMPLE_QUESTION,
    FORMAT_REMINDER,
    R1_SYSTEM_PROMPT,
    PromptBuilder,
    format_question,
)
from medrlvr.rewards.parsing import FORMATS, ParseRules, parse_completion

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


def test_direct_style_pre_fills_a_closed_think_block_and_opens_the_answer(tokenizer):
    builder = PromptBuilder(tokenizer, one_shot=True, response_prefix="", template="r1_zero", style="direct")
    prompt = builder(QUESTION)
    assert prompt.endswith(" Assistant:" + DIRECT_PREFIX) and DIRECT_PREFIX.startswith("<think>")
    assert prompt.count(DIRECT_REMINDER) == 2 and FORMAT_REMINDER not in prompt  # worked example and question
    assert "Assistant: " + DIRECT_PREFIX + "B</answer>" in prompt  # the worked example answers directly too
    assert builder.full_response("B</answer>") == DIRECT_PREFIX + "B</answer>"


def test_direct_answers_parse_under_both_formats(tokenizer):
    builder = PromptBuilder(tokenizer, style="direct")
    for format_name in FORMATS:
        parsed = parse_completion(builder.full_response("C</answer>"), "ABCDE", ParseRules(format=format_name))
        assert (parsed.format_error, parsed.letter) == (None, "C"), format_name


def test_cot_style_keeps_the_reasoning_prompt(tokenizer):
    cot = PromptBuilder(tokenizer, style="cot")
    assert cot(QUESTION) == PromptBuilder(tokenizer)(QUESTION) and cot.prefix == "<think>"
    with pytest.raises(ValueError, match="unknown prompt style 'terse'"):
        PromptBuilder(tokenizer, style="terse")


@pytest.mark.parametrize("template", ["chat", "r1_zero"])
@pytest.mark.parametrize("style", ["cot", "direct"])
def test_format_template_filled_with_a_question_is_the_prompt(tokenizer, template, style):
    builder = PromptBuilder(tokenizer, template=template, style=style)
    text = builder.format_template()
    assert text.count("{prompt}") == 1
    assert text.format(prompt=format_question(QUESTION)) == builder(QUESTION)


def test_format_template_escapes_braces_of_the_rest_of_the_prompt(tokenizer):
    builder = PromptBuilder(tokenizer, one_shot=False, reminder="", system_prompt="Use {curly} braces.", template="r1_zero")
    assert builder.format_template() == "Use {{curly}} braces. User: {prompt} Assistant:<think>"
    assert builder.format_template().format(prompt="Q?") == "Use {curly} braces. User: Q? Assistant:<think>"
