"""Datasets named by ``conf/data`` option: ``medrlvr.evaluate``'s ``datasets`` and training's ``data.eval_sets``.

A spec is a list of option names (``[medqa_5opt, mmlu_pro_health]``) or a mapping from option names to data
overrides (``{mmlu_pro_health: {path: FILE}}``); each dataset gets the given prompt unless its overrides set one.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from medrlvr.config import ConfigError, DataConfig, PromptConfig
from medrlvr.paths import config_dir


def compose_data(name: str, overrides: dict[str, Any] | None = None, prompt: PromptConfig | None = None) -> DataConfig:
    """``conf/data/<name>.yaml`` with ``prompt`` and ``overrides``, validated against :class:`DataConfig`."""
    path = config_dir() / "data" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no data config {name!r}; available: {available}")
    base = OmegaConf.structured(DataConfig(prompt=prompt) if prompt is not None else DataConfig)
    merged = OmegaConf.merge(base, OmegaConf.load(path), overrides or {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def named_datasets(spec: Any, key: str, prompt: PromptConfig) -> dict[str, DataConfig]:
    """The datasets of ``spec`` (a name, a list of names or a name → overrides mapping) by name; errors name
    ``key``."""
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list):
        spec = {str(name): {} for name in spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a list of data config names or a mapping, got {spec!r}")
    try:
        return {str(name): compose_data(str(name), overrides, prompt) for name, overrides in spec.items()}
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from err


def eval_set_configs(data: DataConfig) -> dict[str, DataConfig]:
    """``data.eval_sets`` by name, with the training prompt (``data.prompt``); none when it is null."""
    if data.eval_sets is None:
        return {}
    return named_datasets(data.eval_sets, "data.eval_sets", data.prompt)


def set_name(data_name: str, split: str) -> str:
    """The metric name of a dataset's ``split`` in training's evaluations: ``<data name>_<split>``."""
    return f"{data_name}_{split}"


def heldout_sets(data: DataConfig, eval_ood: bool) -> dict[str, tuple[DataConfig, str]]:
    """Training's evaluation sets by metric name (``eval/<name>/*``), each as (data, split): ``data.eval_split``
    (:func:`set_name`), ``data.ood_split`` when ``eval_ood``, then each of ``data.eval_sets`` by its name on its
    ``test_split``. A set named twice is kept once when it is the same data and split, else refused."""
    sets = {set_name(data.name, data.eval_split): (data, data.eval_split)}
    if eval_ood and data.ood_split is not None:
        sets.setdefault(set_name(data.name, data.ood_split), (data, data.ood_split))
    for name, config in eval_set_configs(data).items():
        if name in sets and _source(*sets[name]) != _source(config, config.test_split):
            taken, split = sets[name]
            raise ConfigError(f"data.eval_sets: {name!r} already names the evaluation of {taken.name}/{split}; rename it")
        sets.setdefault(name, (config, config.test_split))
    return sets


def _source(data: DataConfig, split: str) -> tuple[str | None, ...]:
    """Where a set's questions come from: two sets of the same name are one set only when this is equal."""
    return data.name, data.path, data.hub_name, data.variant, split


def eval_set_params(data: DataConfig, eval_ood: bool) -> dict[str, str]:
    """``eval_set/<name>/data`` and ``eval_set/<name>/split`` of each of :func:`heldout_sets`, for the run's params."""
    params = {}
    for name, (config, split) in heldout_sets(data, eval_ood).items():
        params.update({f"eval_set/{name}/data": config.name, f"eval_set/{name}/split": split})
    return params
