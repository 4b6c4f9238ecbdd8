"""MedQA (USMLE) in its published schema: ``question``, ``options`` {letter: text}, ``answer_idx`` (letter),
``answer`` (the correct option's text, optional), plus ``meta_info`` / ``metamap_phrases`` kept as metadata.

Variants (``data.variant``): ``4_options`` (hub ``GBaker/MedQA-USMLE-4-options``, splits train/test; the
original release's ``US/4_options/phrases_no_exclude_{train,dev,test}.jsonl``) and ``5_options`` (the
original release's ``US/{train,dev,test}.jsonl``; no hub copy is configured by default, so it needs
``data.path`` or ``data.hub_name``). A variant also checks that every row has that many options. Medbullets
(``medbullets_op5.jsonl``) uses the same schema and loads as ``data=medqa_5opt``.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from medrlvr.config import DataConfig
from medrlvr.data.files import DuplicateKeyDict, parse_embedded, read_rows
from medrlvr.data.loading import Row, RowMapper, SourceSpec
from medrlvr.data.schema import DatasetError, MCQExample, validate_example

REQUIRED_FIELDS = ("question", "options", "answer_idx")
VARIANTS = {"4_options": 4, "5_options": 5}



def same_answer_text(answer_text: object, option_text: object, letter: str) -> bool:
    """Whether a row's ``answer`` field names the same option as ``answer_idx``'s text, up to formatting.

    Both are compared after collapsing whitespace (line breaks included) and ignoring case; the answer may
    repeat its own letter in front (``"C. text"``, ``"C) text"``, ``"(C) text"``, ``"C: text"``), as some
    published copies of MedQA write it. Any other difference is a disagreement.
    """
    def normal(text: object) -> str:
        return " ".join(str(text).split()).casefold()

    given, letter = normal(answer_text), re.escape(letter.casefold())
    prefix = re.match(rf"(\({letter}\)|{letter}[.):])\s*", given)
    return given == normal(option_text) or (prefix is not None and given[prefix.end():] == normal(option_text))


def example_from_medqa_row(
    row: dict[str, Any], source: str, row_number: int, option_count: int | None = None
) -> MCQExample:
    """Map one MedQA row onto :class:`MCQExample`; raise :class:`DatasetError` on a bad row.

    ``options`` may be an object, or JSON text (a CSV cell); options whose value is null are absent (a
    Parquet struct column gives 4-option rows a null ``E``). ``option_count`` (from ``data.variant``)
    requires that many options.
    """
    if not isinstance(row, dict):
        raise DatasetError(source, row_number, None, f"expected a JSON object, got {type(row).__name__}")
    for name in REQUIRED_FIELDS:
        if row.get(name) is None:
            raise DatasetError(source, row_number, name, "missing field")
    options = parse_embedded(row["options"])
    if isinstance(options, DuplicateKeyDict):
        raise DatasetError(source, row_number, "options", f"duplicate option letters {options.duplicate_keys}")
    if not isinstance(options, dict):
        raise DatasetError(source, row_number, "options", "must be an object mapping letters to option texts")
    options = {key: text for key, text in options.items() if text is not None}
    letters = [str(k).strip() for k in options]
    if len(set(letters)) != len(letters):
        raise DatasetError(source, row_number, "options", f"duplicate option letters {letters}")
    if option_count is not None and len(letters) != option_count:
        raise DatasetError(
            source, row_number, "options",
            f"has {len(letters)} options but data.variant expects {option_count} (set data.variant to match the file)",
        )
    if not isinstance(row["answer_idx"], str):
        raise DatasetError(source, row_number, "answer_idx", f"must be an option letter, got {row['answer_idx']!r}")
    answer = row["answer_idx"].strip()
    if row.get("answer") is not None and answer in options and not same_answer_text(row["answer"], options[answer], answer):
        raise DatasetError(
            source, row_number, "answer", f"text {row['answer']!r} differs from option {answer}: {options[answer]!r}"
        )
    metadata = {k: v for k, v in row.items() if k not in (*REQUIRED_FIELDS, "answer", "id")}
    example = MCQExample(
        question=row["question"],
        options=dict(zip(letters, options.values())),
        answer=answer,
        source=source,
        id=str(row.get("id", row_number)),
        metadata=metadata,
    )
    return validate_example(example, source, row_number)


def _make_mapper(cfg: DataConfig, rows: list[Row], from_hub: bool) -> RowMapper:
    return functools.partial(example_from_medqa_row, option_count=VARIANTS.get(cfg.variant or ""))


SOURCE = SourceSpec(
    name="medqa",
    make_mapper=_make_mapper,
    hub_names={"4_options": "GBaker/MedQA-USMLE-4-options"},
    variants=tuple(VARIANTS),
)


def load_medqa_jsonl(path: str | Path) -> list[MCQExample]:
    """Read a MedQA-schema JSONL file; rows are numbered from 1, as editors show lines."""
    examples = [example_from_medqa_row(row, str(path), number) for number, row in read_rows(path)]
    if not examples:
        raise DatasetError(str(path), None, None, "file holds no rows")
    return examples


def write_medqa_jsonl(examples: list[MCQExample], path: str | Path) -> None:
    """Write examples in MedQA's JSONL schema, one object per line."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.to_medqa_row(), ensure_ascii=False) + "\n")
