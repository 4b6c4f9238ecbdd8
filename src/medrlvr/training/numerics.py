"""Guard against NaN/inf: skip the update that would apply them, count it, stop after too many in a row."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class NumericsError(RuntimeError):
    """Too many consecutive iterations had non-finite loss, advantages or gradients."""


def nonfinite(**tensors: torch.Tensor | None) -> list[str]:
    """Names of the given tensors that hold a NaN or an inf."""
    return [name for name, t in tensors.items() if t is not None and not bool(torch.isfinite(t).all())]


class NumericsGuard:
    """Counts bad iterations (an iteration is bad if any of its updates was skipped for non-finite values).

    :meth:`record` raises :class:`NumericsError` once ``max_bad_updates`` consecutive iterations were bad.
    """

    def __init__(self, max_bad_updates: int) -> None:
        self.max_bad_updates = max_bad_updates
        self.total_bad = 0
        self.consecutive_bad = 0

    def record(self, iteration: int, problems: list[str]) -> dict[str, float]:
        """Update the counters for ``iteration``; returns them as metrics (logged at step = iteration)."""
        if problems:
            self.total_bad += 1
            self.consecutive_bad += 1
            log.warning("iteration %d: non-finite %s; update skipped", iteration, ", ".join(sorted(set(problems))))
        else:
            self.consecutive_bad = 0
        if self.consecutive_bad >= self.max_bad_updates:
            raise NumericsError(
                f"{self.consecutive_bad} consecutive iterations (up to {iteration}) had non-finite "
                f"{', '.join(sorted(set(problems)))}; stopping (trainer.max_bad_updates={self.max_bad_updates})"
            )
        return {
            "numerics/skipped_update": float(bool(problems)),
            "numerics/bad_iterations": float(self.total_bad),
            "numerics/consecutive_bad": float(self.consecutive_bad),
        }

    def state_dict(self) -> dict[str, int]:
        return {"total_bad": self.total_bad, "consecutive_bad": self.consecutive_bad}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total_bad, self.consecutive_bad = state["total_bad"], state["consecutive_bad"]
