"""Loading one split of a source dataset from the Hugging Face hub or from local files, through one row mapping.

A :class:`SourceSpec` says where a source lives on the hub and how to build the function that maps one of
its rows onto :class:`MCQExample`. Rows from the hub (``datasets.load_dataset``) and rows from local files
(:mod:`medrlvr.data.files`) go through that same function, so both paths validate identically. A bad row
raises :class:`DatasetError` naming the file, the row and the field; with ``data.skip_invalid_rows=true``
bad rows are skipped instead, and their number and ids are logged and returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrlvr.config import ConfigError, DataConfig
from medrlvr.data.files import read_rows, split_files
from medrlvr.data.schema import DatasetError, MCQExample

log = logging.getLogger(__name__)

# (where the row comes from, row number, row)
Row = tuple[str, int, Any]
# Maps one row onto an example; ``None`` means the row belongs to another subset (e.g. another MMLU-Pro category).
RowMapper = Callable[[Any, str, int], "MCQExample | None"]
MAX_LOGGED_IDS = 50


@dataclass(frozen=True)
class SourceSpec:
    """A source dataset: its default hub names (by ``data.variant``; key ``None`` when it has no variants),
    hub split names where they differ from ours, and ``make_mapper(cfg, rows, from_hub)`` building the row
    mapping (it may look at all rows first, e.g. to tell whether answer indices count from 0 or 1)."""

    name: str
    make_mapper: Callable[[DataConfig, list[Row], bool], RowMapper]
    hub_names: dict[str | None, str] = field(default_factory=dict)
    variants: tuple[str, ...] = ()
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedRow:
    """A row left out under ``data.skip_invalid_rows=true``: where it was, its id and the error."""

    origin: str
    row: int
    id: str
    error: str


@dataclass(frozen=True)
class LoadedSplit:
    """The examples of one split, where they were read from, and any rows skipped as invalid."""

    examples: list[MCQExample]
    origin: str
    skipped: list[SkippedRow] = field(default_factory=list)


def _row_id(row: Any, number: int) -> str:
    if isinstance(row, dict):
        for key in ("id", "question_id"):
            if row.get(key) not in (None, ""):
                return str(row[key])
    return f"row {number}"


def local_rows(path: str | Path, split: str) -> tuple[list[Row], str]:
    """Rows of ``split`` from a file (which serves every split) or a folder (one file or shard set per split)."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = split_files(path, split)
    else:
        raise ConfigError(f"data.path: no such file or folder: {path}")
    rows = [(str(file), number, row) for file in files for number, row in read_rows(file)]
    origin = str(files[0]) if len(files) == 1 else f"{path} ({len(files)} files)"
    return rows, origin


def hub_rows(hub_name: str, config: str | None, split: str) -> tuple[list[Row], str]:
    """Rows of ``split`` of a Hugging Face hub dataset, through ``datasets.load_dataset``."""
    import datasets

    origin = f"{hub_name}[{split}]"
    try:
        dataset = datasets.load_dataset(hub_name, config, split=split)
    except Exception as err:  # network, auth and missing-split failures all end here
        raise DatasetError(
            origin, None, None,
            f"cannot load from the Hugging Face hub ({type(err).__name__}: {err}); "
            "without network, set data.path to a local copy in the dataset's published schema",
        ) from err
    return [(origin, number, dict(row)) for number, row in enumerate(dataset, start=1)], origin


def resolve_hub_name(spec: SourceSpec, cfg: DataConfig) -> str:
    """``data.hub_name``, else the source's default for ``data.variant``; an error says what to set otherwise."""
    if cfg.hub_name:
        return cfg.hub_name
    if cfg.variant in spec.hub_names:
        return spec.hub_names[cfg.variant]
    raise ConfigError(
        f"data.name={spec.name}"
        + (f" data.variant={cfg.variant}" if cfg.variant else "")
        + " has no default hub dataset: set data.path to a local file or folder, or data.hub_name"
    )


def map_rows(spec: SourceSpec, cfg: DataConfig, rows: list[Row], origin: str, from_hub: bool) -> LoadedSplit:
    """Map and validate every row; skip and report bad rows only when ``data.skip_invalid_rows`` is set."""
    mapper = spec.make_mapper(cfg, rows, from_hub)
    examples: list[MCQExample] = []
    skipped: list[SkippedRow] = []
    for where, number, row in rows:
        try:
            example = mapper(row, where, number)
        except DatasetError as err:
            if not cfg.skip_invalid_rows:
                raise
            skipped.append(SkippedRow(where, number, _row_id(row, number), str(err)))
            continue
        if example is not None:
            examples.append(example)
    if skipped:
        ids = [s.id for s in skipped]
        log.warning(
            "%s: skipped %d invalid row(s) (data.skip_invalid_rows=true), ids: %s%s; first error: %s",
            origin, len(skipped), ", ".join(ids[:MAX_LOGGED_IDS]),
            f" ... ({len(ids) - MAX_LOGGED_IDS} more)" if len(ids) > MAX_LOGGED_IDS else "", skipped[0].error,
        )
    if not examples:
        raise DatasetError(origin, None, None, f"no {spec.name} examples in {len(rows)} row(s)")
    return LoadedSplit(examples, origin, skipped)


def load_source_split(spec: SourceSpec, cfg: DataConfig, split: str) -> LoadedSplit:
    """One split of ``spec``: from ``data.path`` when set, else from the hub."""
    if cfg.variant is not None and cfg.variant not in spec.variants:
        allowed = ", ".join(spec.variants) if spec.variants else "none (leave it null)"
        raise ConfigError(f"data.variant: {cfg.variant!r} is not a variant of {spec.name}; allowed: {allowed}")
    if cfg.path:
        rows, origin = local_rows(cfg.path, split)
        if Path(cfg.path).expanduser().is_file():
            log.info("data.path is one file: split %r reads all of %s", split, origin)
        return map_rows(spec, cfg, rows, origin, from_hub=False)
    hub_split = spec.hub_splits.get(split, split)
    rows, origin = hub_rows(resolve_hub_name(spec, cfg), spec.hub_config, hub_split)
    return map_rows(spec, cfg, rows, origin, from_hub=True)
