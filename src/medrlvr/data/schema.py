"""The one internal example type every dataset loader maps onto, and its validation."""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

OPTION_LETTERS = string.ascii_uppercase[:10]  # A–J: MMLU-Pro has up to ten options


class DatasetError(ValueError):
    """A dataset row is malformed; the message names the file, the row and the field."""

    def __init__(self, source: str, row: int | None, field_name: str | None, problem: str) -> None:
        where = source if row is None else f"{source}, row {row}"
        if field_name is not None:
            where += f", field {field_name!r}"
        super().__init__(f"{where}: {problem}")
        self.source, self.row, self.field_name, self.problem = source, row, field_name, problem


@dataclass(frozen=True)
class MCQExample:
    """One multiple-choice question.

    ``options`` maps letters (consecutive from A) to option texts, in display order; ``answer`` is the
    correct letter; ``source`` names the dataset and ``id`` the row within it.
    """

    question: str
    options: dict[str, str]
    answer: str
    source: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def letters(self) -> str:
        return "".join(self.options)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def to_medqa_row(self) -> dict[str, Any]:
        """This example in MedQA's JSONL schema (``question``, ``options``, ``answer_idx``, ``answer``)."""
        return {
            "id": self.id,
            "question": self.question,
            "options": dict(self.options),
            "answer_idx": self.answer,
            "answer": self.answer_text,
            **({"meta_info": self.metadata["meta_info"]} if "meta_info" in self.metadata else {}),
        }


def validate_example(example: MCQExample, source: str, row: int, answer_field: str = "answer_idx") -> MCQExample:
    """Check an example's invariants; raise :class:`DatasetError` naming the row and field otherwise.

    ``answer_field`` names the source column that holds the answer, for the error message.
    """
    if not isinstance(example.question, str) or not example.question.strip():
        raise DatasetError(source, row, "question", "empty question")
    letters = list(example.options)
    if not 2 <= len(letters) <= len(OPTION_LETTERS):
        raise DatasetError(source, row, "options", f"needs 2 to {len(OPTION_LETTERS)} options, got {len(letters)}")
    if letters != list(OPTION_LETTERS[: len(letters)]):
        raise DatasetError(source, row, "options", f"option letters must run A, B, C, ... in order, got {letters}")
    for letter, text in example.options.items():
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(source, row, "options", f"option {letter} is empty")
    if example.answer not in example.options:
        raise DatasetError(source, row, answer_field, f"answer letter {example.answer!r} is not among the options {letters}")
    return example


class ExampleBatch:
    """The questions of one training step, as the data loader hands them to a LightningModule.

    A plain container rather than a list: Lightning's precision plugins walk lists and dataclasses to cast
    tensors (DeepSpeed's does, before every step) and cannot rebuild a frozen :class:`MCQExample`.
    """

    def __init__(self, examples: list[MCQExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[MCQExample]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> MCQExample:
        return self.examples[index]
