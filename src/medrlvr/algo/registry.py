"""Registries of the algorithm's interchangeable parts: name → function, each name registered once.

Advantage estimators (``algo.advantage_estimator``), loss aggregation modes (``algo.loss_aggregation``) and KL
estimators (``algo.kl_estimator``) are decorated functions in :mod:`medrlvr.algo.advantages` and
:mod:`medrlvr.algo.core`; the config checks, the dispatch and the docs read the names from here (as verl's
``register_adv_est``). Each advantage estimator also names the algorithm it is (``algo.name``). This module
imports no torch: a registry imports the module that fills it on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that no function is registered under; the message names the config key and the choices."""


@dataclass
class Registry(Generic[T]):
    """Entries chosen by the config key ``key``, registered when ``module`` is imported."""

    key: str
    module: str
    entries: dict[str, T] = field(default_factory=dict)

    def add(self, name: str, entry: T) -> None:
        if name in self.entries:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self.entries[name] = entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated function under ``name``."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        importlib.import_module(self.module)
        return tuple(self.entries)

    def get(self, name: str) -> T:
        if name not in self.names():
            raise UnknownNameError(f"{self.key}: unknown {name!r}; choose one of {', '.join(self.entries)}")
        return self.entries[name]


@dataclass(frozen=True)
class AdvantageEstimator:
    """An estimator: ``fn(rewards, values, response_mask, settings)`` → ``(advantages, returns)``, all ``(N, T)``
    (``settings``: :class:`medrlvr.algo.advantages.EstimatorSettings`); ``algorithm`` is the ``algo.name`` it labels, ``critic`` whether
    it reads the critic's values, ``groups`` whether it needs several completions per prompt."""

    fn: Callable[..., Any]
    algorithm: str
    critic: bool = False
    groups: bool = False


ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("algo.advantage_estimator", "medrlvr.algo.advantages")
LOSS_AGGREGATIONS: Registry[Callable[..., Any]] = Registry("algo.loss_aggregation", "medrlvr.algo.core")
KL_ESTIMATORS: Registry[Callable[..., Any]] = Registry("algo.kl_estimator", "medrlvr.algo.core")


def register_advantage_estimator(
    name: str, *, algorithm: str, critic: bool = False, groups: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register an advantage estimator under ``name``, labelled ``algorithm`` in ``algo.name``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        ADVANTAGE_ESTIMATORS.add(name, AdvantageEstimator(fn, algorithm, critic, groups))
        return fn

    return decorate


def algorithms() -> dict[str, str]:
    """``algo.name`` → the advantage estimator it stands for (``ppo`` → ``gae``, ...)."""
    return {ADVANTAGE_ESTIMATORS.get(name).algorithm: name for name in ADVANTAGE_ESTIMATORS.names()}
