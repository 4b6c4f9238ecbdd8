"""Datasets by name: a data config and a split in, validated examples out.

``bundled`` is the project's own set (its files ship in the package); ``medqa``, ``mmlu_pro_health`` and
``medmcqa`` load from ``data.path`` (a file or a folder, in the source's published schema) or, when that is
null, from the Hugging Face hub.
"""

from __future__ import annotations

from medrlvr.config import ConfigError, DataConfig
from medrlvr.data import medmcqa, medqa, mmlu_pro
from medrlvr.data.bundled import BUNDLED_DIR, load_bundled, split_path
from medrlvr.data.loading import LoadedSplit, SourceSpec, load_source_split
from medrlvr.data.schema import MCQExample
from medrlvr.data.transforms import set_option_count

SOURCES: dict[str, SourceSpec] = {spec.name: spec for spec in (medqa.SOURCE, mmlu_pro.SOURCE, medmcqa.SOURCE)}
DATASETS = ("bundled", *SOURCES)


def _load(cfg: DataConfig, split: str) -> LoadedSplit:
    if cfg.name == "bundled":
        if cfg.path or cfg.hub_name or cfg.variant:
            raise ConfigError(
                "data.path/hub_name/variant do not apply to data=bundled; for your own MedQA-schema file use "
                "data=medqa_5opt data.path=FILE"
            )
        return LoadedSplit(load_bundled(split), str(split_path(split, BUNDLED_DIR)))
    if cfg.name not in SOURCES:
        raise ConfigError(f"data.name: unknown dataset {cfg.name!r}; available: {list(DATASETS)}")
    return load_source_split(SOURCES[cfg.name], cfg, split)


def load_split_report(cfg: DataConfig, split: str, seed: int = 0) -> LoadedSplit:
    """Load ``split`` of ``cfg.name``, apply ``data.option_count``, and say where it came from and what was skipped."""
    loaded = _load(cfg, split)
    return LoadedSplit(set_option_count(loaded.examples, cfg.option_count, seed), loaded.origin, loaded.skipped)


def load_split(cfg: DataConfig, split: str, seed: int = 0) -> list[MCQExample]:
    """The examples of ``split`` of ``cfg.name`` after the option-count transform (training questions)."""
    return load_split_report(cfg, split, seed).examples


def load_heldout_split(cfg: DataConfig, split: str) -> list[MCQExample]:
    """The examples of an evaluation split as published: ``data.option_count`` changes the training questions
    only, so that runs with different option counts are evaluated on the same questions."""
    return _load(cfg, split).examples
