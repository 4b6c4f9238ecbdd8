"""MedMCQA in its published schema: ``id``, ``question``, ``opa``..``opd`` (options A-D), ``cop`` (the correct
option as an integer), ``choice_type``, ``exp`` (explanation), ``subject_name``, ``topic_name``.

``cop`` counts from 1 in the original release (the ``train.json``/``dev.json`` JSON-Lines files: 1-4) and
from 0 on the hub (``openlifescienceai/medmcqa``: its loader subtracted 1 and stored a ClassLabel a-d,
0-3; the test split, whose answers are not public, holds -1). Hub rows are read as 0-based. For local
files ``data.answer_index_base`` says which (0 or 1); when it is null the file decides: a ``cop`` of 0
means 0-based, a ``cop`` of 4 means 1-based, and a file showing neither (or both) is an error asking to
set it.
"""

from __future__ import annotations

import functools
from typing import Any

from medrlvr.config import DataConfig
from medrlvr.data.loading import Row, RowMapper, SourceSpec
from medrlvr.data.schema import OPTION_LETTERS, DatasetError, MCQExample, validate_example

OPTION_FIELDS = ("opa", "opb", "opc", "opd")
METADATA_FIELDS = ("choice_type", "exp", "subject_name", "topic_name")
NO_LABEL = -1


def _cop(value: Any, source: str, row_number: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(source, row_number, "cop", f"must be an integer option number, got {value!r}")
    return value


def example_from_medmcqa_row(row: dict[str, Any], source: str, row_number: int, cop_base: int = 1) -> MCQExample:
    """Map one MedMCQA row onto :class:`MCQExample`, reading ``cop`` as counting from ``cop_base``."""
    if not isinstance(row, dict):
        raise DatasetError(source, row_number, None, f"expected a JSON object, got {type(row).__name__}")
    for name in ("question", *OPTION_FIELDS, "cop"):
        if row.get(name) is None:
            raise DatasetError(source, row_number, name, "missing field")
    cop = _cop(row["cop"], source, row_number)
    if cop == NO_LABEL:
        raise DatasetError(source, row_number, "cop", "no answer (-1): MedMCQA's test split has no public answers")
    letters = OPTION_LETTERS[: len(OPTION_FIELDS)]
    if not cop_base <= cop < cop_base + len(letters):
        raise DatasetError(
            source, row_number, "cop",
            f"{cop} is outside {cop_base}..{cop_base + len(letters) - 1} (cop counting from {cop_base}; "
            "set data.answer_index_base if the file counts differently)",
        )
    example = MCQExample(
        question=row["question"],
        options={letter: row[name] for letter, name in zip(letters, OPTION_FIELDS)},
        answer=letters[cop - cop_base],
        source=source,
        id=str(row.get("id") or row_number),
        metadata={key: row[key] for key in METADATA_FIELDS if key in row},
    )
    return validate_example(example, source, row_number, answer_field="cop")


def infer_cop_base(rows: list[Row]) -> int:
    """0 if some ``cop`` is 0, 1 if some ``cop`` is 4; an error naming the file when the rows cannot tell."""
    values = set()
    for _, _, row in rows:
        try:
            values.add(_cop(row.get("cop"), "", 0) if isinstance(row, dict) else None)
        except DatasetError:
            continue
    values.discard(None)
    origin = rows[0][0] if rows else "medmcqa"
    labelled = values - {NO_LABEL}
    if values and not labelled:
        raise DatasetError(origin, None, "cop", "every row has cop=-1 (no answer): MedMCQA's test split has no public answers")
    if 0 in labelled and 4 in labelled:
        raise DatasetError(origin, None, "cop", "holds both 0 and 4, so it counts neither from 0 nor from 1")
    if 0 in labelled:
        return 0
    if 4 in labelled:
        return 1
    raise DatasetError(
        origin, None, "cop",
        f"cannot tell whether cop counts from 0 (hub copy) or from 1 (original release): values {sorted(labelled)}; "
        "set data.answer_index_base=0 or 1",
    )


def _make_mapper(cfg: DataConfig, rows: list[Row], from_hub: bool) -> RowMapper:
    if from_hub:
        base = 0
    elif cfg.answer_index_base is not None:
        base = cfg.answer_index_base
    else:
        base = infer_cop_base(rows)
    return functools.partial(example_from_medmcqa_row, cop_base=base)


SOURCE = SourceSpec(
    name="medmcqa",
    make_mapper=_make_mapper,
    hub_names={None: "openlifescienceai/medmcqa"},
    hub_splits={"dev": "validation"},
)
