"""Reading completions to classify: MLflow table JSON (``columns``/``data``), a JSON list of objects, or JSONL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medrlvr.data.schema import OPTION_LETTERS, DatasetError


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.json`` (MLflow table or list of objects) or ``.jsonl`` file, as dicts."""
    source = str(path)
    if not path.is_file():
        raise DatasetError(source, None, None, "no such file")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(source, number, None, f"invalid JSON: {err.msg}") from err
        return _check_objects(rows, source)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(source, None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from err
    if isinstance(content, dict) and {"columns", "data"} <= content.keys():
        columns = content["columns"]
        for number, values in enumerate(content["data"], start=1):
            if not isinstance(values, list) or len(values) != len(columns):
                raise DatasetError(source, number, "data", f"expected {len(columns)} values (one per column)")
        return [dict(zip(columns, values)) for values in content["data"]]
    if isinstance(content, list):
        return _check_objects(content, source)
    raise DatasetError(source, None, None, "expected an MLflow table ({'columns': ..., 'data': ...}) or a list of objects")


def _check_objects(rows: list[Any], source: str) -> list[dict[str, Any]]:
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DatasetError(source, number, None, f"expected an object, got {type(row).__name__}")
    return rows


# One option per line as the completion tables write them (``A. text``)
OPTION_LINE = re.compile(r"([A-J])\. (.*)")


def options_by_letter(text: str) -> dict[str, str] | None:
    """``{"A": text, ...}`` from ``A. text`` lines, or None when a line is not an option."""
    matches = [OPTION_LINE.fullmatch(line) for line in text.splitlines()]
    if not matches or not all(matches):
        return None
    return {m.group(1): m.group(2) for m in matches if m}


def load_completions(path: Path, default_letters: str = OPTION_LETTERS) -> list[dict[str, Any]]:
    """Rows with a text ``response``, the question's option ``letters`` and, optionally, its ``options`` (text by
    letter, or ``A. text`` lines as in the completion tables). Letters default to the options' letters, else
    ``default_letters``."""
    rows = read_rows(path)
    if not rows:
        raise DatasetError(str(path), None, None, "no completions")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("response"), str):
            raise DatasetError(str(path), number, "response", "missing or not text")
        if isinstance(row.get("options"), str):
            row["options"] = options_by_letter(row["options"]) or row["options"]
        from_options = "".join(row["options"]) if isinstance(row.get("options"), dict) else None
        letters = row.get("letters") or from_options or default_letters
        if not isinstance(letters, str) or not letters or any(c not in OPTION_LETTERS for c in letters):
            raise DatasetError(str(path), number, "letters", f"expected option letters within A-J, got {letters!r}")
        row["letters"] = letters
        options = row.get("options")
        if options is not None and not (
            isinstance(options, dict) and all(k in letters and isinstance(v, str) for k, v in options.items())
        ):
            raise DatasetError(str(path), number, "options", f"expected option texts by letter within {letters}")
    return rows
