"""Rule-based rewards, each a :class:`~medrlvr.rewards.base.RewardFn` reading completions with its :class:`ParseRules`.

Every reward reports the component ``correctness`` (the study's scheme) and its shaping terms under their own
names (``length_penalty``; ``leak_penalty`` and ``structure_penalty``; ``partial_format_credit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from medrlvr.rewards.base import Options, RewardOutput
from medrlvr.rewards.parsing import ParsedCompletion, ParseRules, answer_block_letter, parse_completion, stated_letters

CORRECTNESS = "correctness"
PARTIAL_FORMAT_CREDIT = "partial_format_credit"


def reasoning_length(parsed: ParsedCompletion) -> int:
    """Number of whitespace-separated words inside the think block (0 when there is none)."""
    return len(parsed.think.split()) if parsed.think else 0


def _check_inputs(
    completions: Sequence[str],
    answers: Sequence[str],
    valid_letters: Sequence[str],
    options: Options | None,
    rules: ParseRules,
) -> None:
    """Clear errors for inputs of different lengths, or option texts missing when the rules need them."""
    lengths = [len(completions), len(answers), len(valid_letters)] + ([len(options)] if options is not None else [])
    if len(set(lengths)) > 1:
        raise ValueError(
            f"reward inputs differ in length: {len(completions)} completions, {len(answers)} answers, "
            f"{len(valid_letters)} option sets" + (f", {len(options)} option texts" if options is not None else "")
        )
    if rules.match_option_text and options is None:
        raise ValueError("reward.match_option_text needs the questions' options: pass options=[example.options, ...]")


@dataclass(frozen=True)
class CorrectnessReward:
    """The study's scheme: one value for a format failure, one for a wrong answer, one for a right one.

    Subclasses shape it with named penalties: :attr:`PENALTIES` names what :meth:`penalties` returns, each
    subtracted from the base score and reported as a component (with a minus sign).
    """

    PENALTIES: ClassVar[tuple[str, ...]] = ()

    format_error: float = -1.0
    wrong_answer: float = 0.0
    correct_answer: float = 1.0
    rules: ParseRules = ParseRules()

    def base_score(self, parsed: ParsedCompletion, answer: str) -> float:
        if not parsed.format_ok:
            return self.format_error
        return self.correct_answer if parsed.letter == answer else self.wrong_answer

    def penalties(self, parsed: ParsedCompletion) -> tuple[float, ...]:
        """The shaping terms (one per name in :attr:`PENALTIES`) subtracted from the base score; none here."""
        return ()

    def parse(
        self, completions: Sequence[str], valid_letters: Sequence[str], options: Options | None
    ) -> list[ParsedCompletion]:
        """Each completion read with this reward's rules (``options`` only when the rules match option texts)."""
        given = options if options is not None else [None] * len(completions)
        return [parse_completion(t, v, self.rules, o) for t, v, o in zip(completions, valid_letters, given)]

    def __call__(
        self,
        completions: Sequence[str],
        answers: Sequence[str],
        valid_letters: Sequence[str],
        options: Options | None = None,
    ) -> RewardOutput:
        _check_inputs(completions, answers, valid_letters, options, self.rules)
        parsed = self.parse(completions, valid_letters, options)
        bases = [self.base_score(p, a) for p, a in zip(parsed, answers)]
        penalties = [self.penalties(p) for p in parsed]
        return RewardOutput(
            scores=[base - sum(terms) for base, terms in zip(bases, penalties)],
            parsed=parsed,
            correct=[p.format_ok and p.letter == a for p, a in zip(parsed, answers)],
            reasoning_words=[reasoning_length(p) for p in parsed],
            components={
                CORRECTNESS: bases,
                **{name: [0.0 - terms[i] for terms in penalties] for i, name in enumerate(self.PENALTIES)},
            },
        )


@dataclass(frozen=True)
class LengthPenaltyReward(CorrectnessReward):
    """Correctness reward minus a penalty for reasoning shorter than ``min_reasoning_words``.

    For a well-formatted completion with ``L`` words of reasoning:
    ``r = r_default − α · max(0, (L_min − L) / L_min)``, so an empty-ish think costs ``α`` and reasoning
    of ``L_min`` words or more costs nothing. Format failures already get ``format_error`` and are not
    penalised twice. This is the remedy the study proposes against answering without reasoning.
    """

    PENALTIES: ClassVar[tuple[str, ...]] = ("length_penalty",)

    min_reasoning_words: int = 20  # conf/reward/length_penalty.yaml
    penalty_coef: float = 0.5

    def penalties(self, parsed: ParsedCompletion) -> tuple[float, ...]:
        if not parsed.format_ok or self.min_reasoning_words <= 0:
            return (0.0,)
        shortfall = max(0, self.min_reasoning_words - reasoning_length(parsed))
        return (self.penalty_coef * shortfall / self.min_reasoning_words,)


@dataclass(frozen=True)
class CompositeReward(CorrectnessReward):
    """Correctness reward minus penalties for the two reward hacks of Tarek & Beheshti (2025, "Reward Hacking
    Mitigation using Verifiable Composite Rewards", arXiv:2509.15557): answering without preceding reasoning,
    and reasoning in a non-standard place.

    For a well-formatted completion:
    ``r = r_default − leak_penalty · [answered early] − structure_penalty · [text before <think>]``, where
    "answered early" means the think block holds fewer than ``min_reasoning_words`` words, or its first
    ``leak_window_words`` words already state an option letter (read by the parser's own rules,
    :func:`~medrlvr.rewards.parsing.stated_letters`: ``B.``, ``Answer: B``, ``the answer is B``,
    ``B is correct``). Text before ``<think>`` is only possible under ``reward.format=study`` (the study's
    step-by-step exploit). Format failures already get ``format_error`` and are not penalised twice.
    """

    PENALTIES: ClassVar[tuple[str, ...]] = ("leak_penalty", "structure_penalty")

    min_reasoning_words: int = 10
    leak_window_words: int = 10
    leak_penalty: float = 0.5
    structure_penalty: float = 0.5

    def answered_early(self, parsed: ParsedCompletion) -> bool:
        words = (parsed.think or "").split()
        return len(words) < self.min_reasoning_words or bool(stated_letters(" ".join(words[: self.leak_window_words])))

    def penalties(self, parsed: ParsedCompletion) -> tuple[float, ...]:
        if not parsed.format_ok:
            return 0.0, 0.0
        return self.leak_penalty * self.answered_early(parsed), self.structure_penalty * bool(parsed.text_before_think)


@dataclass(frozen=True)
class PartialFormatReward(CorrectnessReward):
    """Correctness reward with partial credit for an almost-formatted completion.

    A completion that fails the strict format but still holds exactly one ``<answer>…</answer>`` block naming
    one valid option letter scores ``partial_format`` (between ``format_error`` and ``wrong_answer``) instead
    of ``format_error``, whether or not that letter is right: it pays for reaching the answer format, never
    for a correct answer outside it. Well-formatted completions score as in the default scheme. The credit
    (``partial_format − format_error``, else 0) is the component ``partial_format_credit``.
    """

    partial_format: float = -0.5

    def __call__(
        self,
        completions: Sequence[str],
        answers: Sequence[str],
        valid_letters: Sequence[str],
        options: Options | None = None,
    ) -> RewardOutput:
        out = super().__call__(completions, answers, valid_letters, options)
        given = options if options is not None else [None] * len(completions)
        partial = [
            not parsed.format_ok and answer_block_letter(text, v, self.rules, o) is not None
            for parsed, text, v, o in zip(out.parsed, completions, valid_letters, given)
        ]
        return replace(
            out,
            scores=[self.partial_format if p else score for p, score in zip(partial, out.scores)],
            components={
                **out.components,
                PARTIAL_FORMAT_CREDIT: [self.partial_format - self.format_error if p else 0.0 for p in partial],
            },
        )


# the rewards by their ``reward.name`` (conf/reward/<name>.yaml); each dataclass field but ``rules`` is a parameter
REWARDS: dict[str, type[CorrectnessReward]] = {
    "default": CorrectnessReward,
    "length_penalty": LengthPenaltyReward,
    "partial_format": PartialFormatReward,
    "composite": CompositeReward,
}
