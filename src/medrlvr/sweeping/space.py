"""Optuna search spaces from Hydra's override grammar, with parameters conditional on a categorical choice.

``hydra.sweeper.params`` holds the parameters every trial samples; ``hydra.sweeper.conditional`` holds those
sampled only when a categorical parameter takes a given value::

    params:
      reward: choice(default, length_penalty)
    conditional:
      reward:
        length_penalty:
          reward.penalty_coef: interval(0.0, 1.0)

A trial that picks ``reward=length_penalty`` also samples ``reward.penalty_coef``; one that picks ``default``
does not (the parameter keeps its configured value and is absent from the trial's Optuna parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

Space = dict[str, tuple[str, BaseDistribution]]


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of a sweep override (``interval``, ``range``, ``choice`` or ``a,b,c``)."""
    value = override.value()
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        values = [float(v) if isinstance(v, float) else v for v in override.sweep_iterator()]
        if not values:
            raise ValueError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step), log=log_scale)
        return FloatDistribution(values[0], values[-1], step=float(value.step), log=log_scale)
    if isinstance(value, IntervalSweep):
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space (use interval(), range(), choice() or a,b,c)")


def search_space(overrides: Sequence[Override]) -> tuple[Space, list[str]]:
    """Split overrides into ``{param: (override key, distribution)}`` and fixed overrides; later ones win."""
    entries: dict[str, Any] = {}
    for override in overrides:
        name = override.key_or_group
        entries.pop(name, None)
        if override.is_sweep_override():
            entries[name] = (override.get_key_element(), distribution(override))
        else:
            entries[name] = f"{override.get_key_element()}={override.get_value_element_as_str()}"
    space = {name: entry for name, entry in entries.items() if isinstance(entry, tuple)}
    fixed = [entry for entry in entries.values() if isinstance(entry, str)]
    return space, fixed


def override_value(value: Any) -> str:
    """A sampled value as Hydra override text."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """Sample ``name`` from ``dist`` in a define-by-run trial."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"{name}: unsupported distribution {dist!r}")


@dataclass(frozen=True)
class SearchSpace:
    """Parameters every trial samples, parameters sampled per value of a categorical one, fixed overrides."""

    params: Space
    branches: dict[str, dict[str, Space]]
    fixed: list[str]

    @classmethod
    def parse(
        cls, parser: OverridesParser, overrides: Sequence[str], conditional: Mapping[str, Mapping[str, Mapping]]
    ) -> SearchSpace:
        """The space of ``overrides`` (``key=value`` texts, later ones win) and ``hydra.sweeper.conditional``."""
        params, fixed = search_space(parser.parse_overrides(list(overrides)))
        fixed_values = dict(text.lstrip("+~").split("=", 1) for text in fixed)
        branches: dict[str, dict[str, Space]] = {}
        for parent, by_value in conditional.items():
            if parent in fixed_values:  # fixed on the command line: its branch's parameters apply to every trial
                value = fixed_values[parent]
                params.update(_branch(parser, parent, value, by_value.get(value, {}), params, fixed_values))
                continue
            _check_values(parent, [str(value) for value in by_value], params)
            branches[parent] = {
                str(value): _branch(parser, parent, str(value), children, params, fixed_values)
                for value, children in by_value.items()
            }
        if not params:
            raise ValueError("hydra.sweeper.params holds no search space (interval(), range(), choice() or a,b,c)")
        return cls(params, branches, fixed)

    @property
    def names(self) -> list[str]:
        """Every parameter a trial may sample, conditional ones after the others."""
        children = (name for by_value in self.branches.values() for space in by_value.values() for name in space)
        return list(dict.fromkeys([*self.params, *children]))

    def sample(self, trial: optuna.Trial) -> dict[str, tuple[str, Any]]:
        """Sample a trial: ``{param: (override key, value)}``, a branch's parameters right after its parent's."""
        sampled: dict[str, tuple[str, Any]] = {}
        for name, (key, dist) in self.params.items():
            value = suggest(trial, name, dist)
            sampled[name] = (key, value)
            for child, (child_key, child_dist) in self.branches.get(name, {}).get(override_value(value), {}).items():
                sampled[child] = (child_key, suggest(trial, child, child_dist))
        return sampled

    def overrides(self, sampled: Mapping[str, tuple[str, Any]]) -> list[str]:
        """A trial's overrides: the fixed ones, then the sampled values."""
        return self.fixed + [f"{key}={override_value(value)}" for key, value in sampled.values()]


def _check_values(parent: str, values: list[str], params: Space) -> None:
    """An error unless ``parent`` is a categorical parameter and ``values`` are among its choices."""
    if parent not in params or not isinstance(params[parent][1], CategoricalDistribution):
        raise ValueError(
            f"hydra.sweeper.conditional.{parent}: {parent} must be a choice() or a,b,c in hydra.sweeper.params, "
            "or a value fixed on the command line"
        )
    choices = [override_value(choice) for choice in params[parent][1].choices]
    for value in values:
        if value not in choices:
            raise ValueError(f"hydra.sweeper.conditional.{parent}.{value}: not one of {parent}'s choices {choices}")


def _branch(
    parser: OverridesParser,
    parent: str,
    value: str,
    children: Mapping[str, str],
    params: Space,
    fixed_values: Mapping[str, str],
) -> Space:
    """The parameters sampled when ``parent`` is ``value``, minus those fixed on the command line."""
    where = f"hydra.sweeper.conditional.{parent}.{value}"
    space, fixed = search_space(parser.parse_overrides([f"{k}={v}" for k, v in children.items()]))
    if fixed:
        raise ValueError(f"{where}: {fixed} are not search spaces (use interval(), range(), choice() or a,b,c)")
    clashes = sorted(set(space) & set(params))
    if clashes:
        raise ValueError(f"{where}: {clashes} are also in hydra.sweeper.params; list each parameter once")
    return {name: entry for name, entry in space.items() if entry[0] not in fixed_values}
