"""Loader for MedQA's JSONL schema: ``question``, ``options`` {letter: text}, ``answer_idx``, ``answer``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medrlvr.data.schema import DatasetError, MCQExample, validate_example

REQUIRED_FIELDS = ("question", "options", "answer_idx")


def example_from_medqa_row(row: dict[str, Any], source: str, row_number: int) -> MCQExample:
    """Map one MedQA row onto :class:`MCQExample`; raise :class:`DatasetError` on a bad row."""
    if not isinstance(row, dict):
        raise DatasetError(source, row_number, None, f"expected a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise DatasetError(source, row_number, name, "missing field")
    options = row["options"]
    if not isinstance(options, dict):
        raise DatasetError(source, row_number, "options", "must be an object mapping letters to option texts")
    letters = [str(k).strip() for k in options]
    if len(set(letters)) != len(letters):
        raise DatasetError(source, row_number, "options", f"duplicate option letters {letters}")
    answer = str(row["answer_idx"]).strip()
    if "answer" in row and answer in options and str(row["answer"]).strip() != str(options[answer]).strip():
        raise DatasetError(
            source, row_number, "answer", f"text {row['answer']!r} differs from option {answer}: {options[answer]!r}"
        )
    metadata = {k: v for k, v in row.items() if k not in (*REQUIRED_FIELDS, "answer", "id")}
    example = MCQExample(
        question=row["question"],
        options={k.strip(): v for k, v in zip(letters, options.values())},
        answer=answer,
        source=source,
        id=str(row.get("id", row_number)),
        metadata=metadata,
    )
    return validate_example(example, source, row_number)


def load_medqa_jsonl(path: str | Path) -> list[MCQExample]:
    """Read a MedQA-schema JSONL file; rows are numbered from 1, as editors show lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(str(path), line_number, None, f"invalid JSON: {err.msg}") from err
            examples.append(example_from_medqa_row(row, str(path), line_number))
    if not examples:
        raise DatasetError(str(path), None, None, "file holds no rows")
    return examples


def write_medqa_jsonl(examples: list[MCQExample], path: str | Path) -> None:
    """Write examples in MedQA's JSONL schema, one object per line."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_medqa_row(), ensure_ascii=False) + "\n")
