"""Reading dataset rows from local files (JSONL, JSON, Parquet, CSV) and finding a split's files in a folder.

Rows come out as ``(row_number, row)`` pairs, untouched: each source's loader maps them. Row numbers are
what a person finds the row by: the line number for JSONL and CSV (the CSV header is line 1), the 1-based
position for a JSON array and Parquet.

JSON objects keep every key even when one is repeated: a repeated key (``{"A": .., "A": ..}``) would
otherwise vanish silently, so such objects are returned as :class:`DuplicateKeyDict`, which records the
repeated keys for the loader to report.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrlvr.data.schema import DatasetError

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "dev", "val", "valid"),
    "dev": ("dev", "validation", "val", "valid"),
    "test": ("test",),
}


class DuplicateKeyDict(dict):
    """A JSON object in which some keys appeared more than once (``duplicate_keys``; the last value is kept)."""

    duplicate_keys: list[str]


def _object_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if not repeated:
        return dict(pairs)
    result = DuplicateKeyDict(pairs)
    result.duplicate_keys = repeated
    return result


def parse_json(text: str) -> Any:
    """``json.loads`` that keeps track of repeated keys (see :class:`DuplicateKeyDict`)."""
    return json.loads(text, object_pairs_hook=_object_hook)


def parse_embedded(value: Any) -> Any:
    """A list or object stored as text in a CSV cell: JSON, or a Python literal as pandas writes it."""
    if not isinstance(value, str):
        return value
    try:
        return parse_json(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _jsonl_rows(path: Path, lines: Iterator[str], first_line: int = 1) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except json.JSONDecodeError as err:
            raise DatasetError(str(path), number, None, f"invalid JSON: {err.msg}") from err


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """A JSON array of objects, or JSON Lines under a ``.json`` name (as MedMCQA and ``Dataset.to_json`` write)."""
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        yield from _jsonl_rows(path, iter(text.splitlines()))
        return
    try:
        rows = parse_json(text)
    except json.JSONDecodeError as err:
        raise DatasetError(str(path), None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from err
    yield from enumerate(rows, start=1)


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several error types for unreadable files
        raise DatasetError(str(path), None, None, f"cannot read Parquet: {err}") from err
    yield from enumerate(table.to_pylist(), start=1)


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, row


def read_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Every row of a JSONL, JSON, Parquet or CSV file as ``(row_number, row)``; DatasetError naming the file
    (and the first bad line) when it is missing or not UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(str(path), None, None, "dataset file not found")
    try:
        yield from _rows_by_type(path)
    except UnicodeDecodeError as err:
        line = _first_undecodable_line(path)
        raise DatasetError(
            str(path), line, None, f"not UTF-8 text ({err.reason}); convert the file to UTF-8 (e.g. with iconv)"
        ) from err


def _first_undecodable_line(path: Path) -> int | None:
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def _rows_by_type(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            yield from _jsonl_rows(path, handle)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    else:
        raise DatasetError(str(path), None, None, f"unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


def _matches(stem: str, alias: str) -> bool:
    """``train``, ``phrases_no_exclude_train``, ``medqa-train`` or a shard ``train-00000-of-00002``."""
    return re.fullmatch(rf"(?:.*[_\-.])?{re.escape(alias)}(?:-\d+-of-\d+)?", stem.lower()) is not None


def split_files(folder: str | Path, split: str) -> list[Path]:
    """The files holding ``split`` in ``folder`` (or its ``data/`` subfolder, the hub's layout).

    A file matches when its name (without suffix) is the split or one of its aliases (``validation`` =
    ``dev`` = ``val``), possibly after a prefix (``phrases_no_exclude_dev.jsonl``), or a shard of it
    (``train-00000-of-00002.parquet``; shards are read in name order). Any other number of matches than
    one file (or one set of shards) is an error that lists what was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    aliases = SPLIT_ALIASES.get(split, (split,))
    for directory in (folder, folder / "data"):
        if not directory.is_dir():
            continue
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        for alias in aliases:
            found = [p for p in files if _matches(p.stem, alias)]
            if len(found) > 1 and not all(re.search(r"-\d+-of-\d+$", p.stem) for p in found):
                raise DatasetError(
                    str(folder), None, None,
                    f"several files match split {split!r}: {[p.name for p in found]}; set data.path to one file",
                )
            if found:
                return found
    available = sorted(p.name for d in (folder, folder / "data") if d.is_dir() for p in d.iterdir())
    raise DatasetError(
        str(folder), None, None, f"no {'/'.join(SUFFIXES)} file for split {split!r} (looked for {list(aliases)}); found {available}"
    )
