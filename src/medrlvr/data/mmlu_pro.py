"""MMLU-Pro in its published schema, restricted to one category (``health`` for ``data=mmlu_pro_health``).

Columns: ``question_id``, ``question``, ``options`` (a list of up to ten texts, lettered A-J in order),
``answer`` (the correct letter), ``answer_index`` (its 0-based position), ``cot_content``, ``category``,
``src``. Hub: ``TIGER-Lab/MMLU-Pro`` (splits ``test``, 12,032 rows, and ``validation``, 70 rows). Rows of
other categories are left out by design (they belong to other subsets, not to this dataset). When both
``answer`` and ``answer_index`` are present they must agree.
"""

from __future__ import annotations

import functools
from typing import Any

from medrlvr.config import DataConfig
from medrlvr.data.files import parse_embedded
from medrlvr.data.loading import Row, RowMapper, SourceSpec
from medrlvr.data.schema import OPTION_LETTERS, DatasetError, MCQExample, validate_example

CATEGORY = "health"
METADATA_FIELDS = ("category", "src", "cot_content")


def _answer_index(value: Any, source: str, row_number: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(source, row_number, "answer_index", f"must be an integer, got {value!r}")
    return value


def example_from_mmlu_pro_row(row: dict[str, Any], source: str, row_number: int, category: str = CATEGORY) -> MCQExample | None:
    """Map one MMLU-Pro row onto :class:`MCQExample` (``None`` for another category); raise on a bad row."""
    if not isinstance(row, dict):
        raise DatasetError(source, row_number, None, f"expected a JSON object, got {type(row).__name__}")
    for name in ("category", "question", "options"):
        if row.get(name) is None:
            raise DatasetError(source, row_number, name, "missing field")
    if str(row["category"]).strip().lower() != category:
        return None
    options = parse_embedded(row["options"])
    if not isinstance(options, list):
        raise DatasetError(source, row_number, "options", f"must be a list of option texts, got {type(options).__name__}")
    if len(options) > len(OPTION_LETTERS):
        raise DatasetError(source, row_number, "options", f"has {len(options)} options; at most {len(OPTION_LETTERS)} (A-J)")
    letters = OPTION_LETTERS[: len(options)]
    has_letter, has_index = row.get("answer") not in (None, ""), row.get("answer_index") not in (None, "")
    if not (has_letter or has_index):
        raise DatasetError(source, row_number, "answer", "missing field (neither answer nor answer_index is given)")
    if has_index:
        index = _answer_index(row["answer_index"], source, row_number)
        if not 0 <= index < len(options):
            raise DatasetError(source, row_number, "answer_index", f"{index} is outside the {len(options)} options (0-based)")
        answer = letters[index]
        if has_letter and str(row["answer"]).strip() != answer:
            raise DatasetError(
                source, row_number, "answer", f"letter {row['answer']!r} disagrees with answer_index {index} ({answer})"
            )
    else:
        answer = str(row["answer"]).strip()
    example = MCQExample(
        question=row["question"],
        options=dict(zip(letters, options)),
        answer=answer,
        source=source,
        id=str(row.get("question_id", row_number)),
        metadata={key: row[key] for key in METADATA_FIELDS if key in row},
    )
    return validate_example(example, source, row_number, answer_field="answer")


def _make_mapper(cfg: DataConfig, rows: list[Row], from_hub: bool) -> RowMapper:
    return functools.partial(example_from_mmlu_pro_row, category=CATEGORY)


SOURCE = SourceSpec(
    name="mmlu_pro_health",
    make_mapper=_make_mapper,
    hub_names={None: "TIGER-Lab/MMLU-Pro"},
    hub_splits={"dev": "validation"},
)
