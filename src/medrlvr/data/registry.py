"""Datasets by name: ``data.name`` and a split in, validated examples out."""

from __future__ import annotations

from medrlvr.data.bundled import load_bundled
from medrlvr.data.schema import MCQExample
from medrlvr.data.transforms import set_option_count

DATASETS = {"bundled": load_bundled}


def load_split(name: str, split: str, option_count: int | None = None, seed: int = 0) -> list[MCQExample]:
    """Load ``split`` of dataset ``name`` and apply the option-count transform."""
    if name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return set_option_count(DATASETS[name](split), option_count, seed)
