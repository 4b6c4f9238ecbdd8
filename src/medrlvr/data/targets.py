"""Supervised targets for the SFT baseline, in the format the reward checks: ``<think>…</think><answer>X</answer>``.

The rationale is either a template naming the correct option (``template``; the bundled data and MedQA have
no explanations) or the example's own explanation when it has one (``field``: e.g. MedMCQA's ``exp``,
MMLU-Pro's ``cot_content``), falling back to the template when that field is empty.
"""

from __future__ import annotations

from medrlvr.data.schema import MCQExample
from medrlvr.rewards.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN


def template_rationale(example: MCQExample) -> str:
    """``The correct option is B: Iron.`` — states the answer without reasoning about it."""
    return f"The correct option is {example.answer}: {example.answer_text.strip()}."


def sft_target(example: MCQExample, rationale: str = "template", rationale_field: str = "exp") -> str:
    """The full target response for ``example``."""
    if rationale not in ("template", "field"):
        raise ValueError(f"algo.rationale must be 'template' or 'field', got {rationale!r}")
    text = example.metadata.get(rationale_field) if rationale == "field" else None
    if not isinstance(text, str) or not text.strip():
        text = template_rationale(example)
    return f"{THINK_OPEN}{text.strip()}{THINK_CLOSE}\n{ANSWER_OPEN}{example.answer}{ANSWER_CLOSE}"
