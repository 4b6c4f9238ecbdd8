"""Prompt construction: the study's R1-style instruction, an optional worked example and a pre-filled ``<think>``,
rendered through the model's chat template or DeepSeek-R1-Zero's plain ``User: … Assistant:`` template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medrlvr.data.schema import MCQExample

if TYPE_CHECKING:  # the stage classifier reads the worked example without loading transformers
    from transformers import PreTrainedTokenizerBase

R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>."
)
TEMPLATES = ("chat", "r1_zero")
# cot: the model reasons inside <think> before answering; direct: the think block is pre-filled and closed, so the
# model's first tokens are the answer (the study's "Direct" baseline prompting of the base model).
STYLES = ("cot", "direct")
FORMAT_REMINDER = "Think inside <think></think>, then give only the option letter inside <answer></answer>."
DIRECT_REMINDER = "Give only the option letter inside <answer></answer>, without reasoning."
DIRECT_THINK = "<think>I answer directly, without reasoning.</think>\n"
DIRECT_PREFIX = DIRECT_THINK + "<answer>"

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
DIRECT_EXAMPLE_RESPONSE = DIRECT_PREFIX + "B</answer>"


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

    ``style="direct"`` asks for the answer without reasoning: the response starts with :data:`DIRECT_PREFIX`
    (a closed think block, then ``<answer>``) in place of ``response_prefix``, the worked example answers the
    same way and the reminder (when not empty) asks for the letter only.
    """

    tokenizer: PreTrainedTokenizerBase
    system_prompt: str = R1_SYSTEM_PROMPT
    one_shot: bool = True
    reminder: str = FORMAT_REMINDER
    response_prefix: str = "<think>"
    template: str = "chat"
    style: str = "cot"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown prompt template {self.template!r}: expected one of {', '.join(TEMPLATES)}")
        if self.style not in STYLES:
            raise ValueError(f"unknown prompt style {self.style!r}: expected one of {', '.join(STYLES)}")

    @property
    def direct(self) -> bool:
        return self.style == "direct"

    @property
    def prefix(self) -> str:
        """The start of every response: ``response_prefix``, or :data:`DIRECT_PREFIX` in the direct style."""
        return DIRECT_PREFIX if self.direct else self.response_prefix

    def messages(self, example: MCQExample) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        reminder = DIRECT_REMINDER if self.direct and self.reminder else self.reminder
        if self.one_shot:
            messages += [
                {"role": "user", "content": format_question(EXAMPLE_QUESTION, reminder)},
                {"role": "assistant", "content": DIRECT_EXAMPLE_RESPONSE if self.direct else EXAMPLE_RESPONSE},
            ]
        return messages + [{"role": "user", "content": format_question(example, reminder)}]

    def __call__(self, example: MCQExample) -> str:
        return self._render(self.messages(example))

    def format_template(self) -> str:
        """The prompt as a ``str.format`` template with one field, ``{prompt}``: a question followed by its
        ``X. option`` lines (:func:`format_question` without the reminder). MLflow's ``prompt_template``."""
        marker = "\x00question\x00"
        messages = self.messages(MCQExample(question=marker, options={}, answer="", source="template", id="template"))
        reminder = DIRECT_REMINDER if self.direct and self.reminder else self.reminder
        messages[-1]["content"] = marker + (f"\n\n{reminder}" if reminder else "")
        text = self._render(messages).replace("{", "{{").replace("}", "}}")
        return text.replace(marker, "{prompt}")

    def _render(self, messages: list[dict[str, str]]) -> str:
        if self.template == "r1_zero":
            text = r1_zero_text(messages)
        elif getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n\nAssistant: "
        return text + self.prefix

    def full_response(self, completion: str) -> str:
        """The response as the reward sees it: the pre-filled prefix plus the generated text."""
        return self.prefix + completion
