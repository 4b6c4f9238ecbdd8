"""A weighted sum of rewards, as TRL's ``reward_funcs`` with ``reward_weights``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from medrlvr.rewards.base import Options, RewardFn, RewardOutput


@dataclass(frozen=True)
class WeightedRewards:
    """``score = Σ weight × reward's score`` over named rewards (``reward=weighted``).

    The first reward is authoritative for what the completions say: the parse, correctness and reasoning length
    (metrics, samples) are its own; the others only add to the score. Each reward's weighted score is a
    component under the reward's name, so the components sum to the score.
    """

    rewards: Mapping[str, RewardFn]
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.rewards:
            raise ValueError("WeightedRewards needs at least one reward")
        if list(self.rewards) != list(self.weights):
            raise ValueError(f"weights are for {list(self.weights)} but the rewards are {list(self.rewards)}")
        bad = {name: w for name, w in self.weights.items() if not math.isfinite(w)}
        if bad:
            raise ValueError(f"weights must be finite numbers, got {bad}")

    def __call__(
        self,
        completions: Sequence[str],
        answers: Sequence[str],
        valid_letters: Sequence[str],
        options: Options | None = None,
    ) -> RewardOutput:
        outputs = {name: reward(completions, answers, valid_letters, options) for name, reward in self.rewards.items()}
        components = {
            name: [self.weights[name] * score for score in out.scores] for name, out in outputs.items()
        }
        first = next(iter(outputs.values()))
        return RewardOutput(
            scores=[sum(parts) for parts in zip(*components.values())],
            parsed=first.parsed,
            correct=first.correct,
            reasoning_words=first.reasoning_words,
            components=components,
        )
