"""Prompt construction: the study's R1-style instruction, an optional worked example and a pre-filled ``<think>``,
rendered through the model's chat template or DeepSeek-R1-Zero's plain ``User: … Assistant:`` template."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from medrlvr.data.schema import MCQExample

R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>."
)
TEMPLATES = ("chat", "r1_zero")
FORMAT_REMINDER = "Think inside <think></think>, then give only the option letter inside <answer></answer>."

# A worked example written for this project (not an exam question).
EXAMPLE_QUESTION = MCQExample(
    question="A 30-year-old woman has fatigue and pale skin. Her blood count shows small, pale red cells and a low ferritin. Which nutrient is she most likely lacking?",
    options={"A": "Vitamin C", "B": "Iron", "C": "Vitamin D", "D": "Iodine", "E": "Zinc"},
    answer="B",
    source="prompt-example",
    id="example-1",
)
EXAMPLE_RESPONSE = (
    "<think>Small, pale red cells with low ferritin mean iron stores are depleted: iron deficiency anaemia."
    "</think>\n<answer>B</answer>"
)


def format_question(example: MCQExample, reminder: str = "") -> str:
    """Question text followed by one ``X. option`` line per option (and an optional reminder line)."""
    lines = [example.question.strip(), ""] + [f"{letter}. {text}" for letter, text in example.options.items()]
    if reminder:
        lines += ["", reminder]
    return "\n".join(lines)


def r1_zero_text(messages: list[dict[str, str]]) -> str:
    """DeepSeek-R1-Zero's template (DeepSeek-AI, 2025, Table 1): the system text, then ``User: …`` and
    ``Assistant: …`` turns separated by single spaces, ending with ``Assistant:`` for the model to continue."""
    parts = [m["content"] if m["role"] == "system" else f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return " ".join(parts + ["Assistant:"])


@dataclass(frozen=True)
class PromptBuilder:
    """Turns an example into the exact text given to the model, through its chat template when it has one.

    ``template="r1_zero"`` ignores any chat template and writes DeepSeek-R1-Zero's plain text instead:
    ``<system prompt> User: <question> Assistant:`` (a worked example, when asked for, as one more
    ``User: … Assistant: …`` exchange before the question). ``response_prefix`` is appended after the assistant
    header and counts as the start of the response: rewards parse ``response_prefix + completion``.
    """

    tokenizer: PreTrainedTokenizerBase
    system_prompt: str = R1_SYSTEM_PROMPT
    one_shot: bool = True
    reminder: str = FORMAT_REMINDER
    response_prefix: str = "<think>"
    template: str = "chat"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown prompt template {self.template!r}: expected one of {', '.join(TEMPLATES)}")

    def messages(self, example: MCQExample) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if self.one_shot:
            messages += [
                {"role": "user", "content": format_question(EXAMPLE_QUESTION, self.reminder)},
                {"role": "assistant", "content": EXAMPLE_RESPONSE},
            ]
        return messages + [{"role": "user", "content": format_question(example, self.reminder)}]

    def __call__(self, example: MCQExample) -> str:
        messages = self.messages(example)
        if self.template == "r1_zero":
            text = r1_zero_text(messages)
        elif getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n\nAssistant: "
        return text + self.response_prefix

    def full_response(self, completion: str) -> str:
        """The response as the reward sees it: the pre-filled prefix plus the generated text."""
        return self.response_prefix + completion
