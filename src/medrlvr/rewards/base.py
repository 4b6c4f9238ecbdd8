"""What a reward is: :class:`RewardFn` takes completions and returns a :class:`RewardOutput` (pure Python, no torch).

``completions`` are full responses (including any pre-filled ``<think>``), ``answers`` the correct letters,
``valid_letters`` the option letters of each question and ``options`` its option texts by letter (needed by
``ParseRules.match_option_text``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from medrlvr.rewards.parsing import ParsedCompletion

Options = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class RewardOutput:
    """Per-completion scores plus what the parser saw (for metrics and analysis).

    ``components`` are the score's named, signed parts, one value per completion each (penalties are ≤ 0): their
    sum is the score. Each is logged as ``reward/<name>``.
    """

    scores: list[float]
    parsed: list[ParsedCompletion]
    correct: list[bool]
    reasoning_words: list[int]
    components: dict[str, list[float]] = field(default_factory=dict)


class RewardFn(Protocol):
    """A reward: scores one completion per (answer, valid letters, options) row."""

    def __call__(
        self,
        completions: Sequence[str],
        answers: Sequence[str],
        valid_letters: Sequence[str],
        options: Options | None = None,
    ) -> RewardOutput: ...
