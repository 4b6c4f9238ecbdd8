"""Stages over training: history-aware classification of iterations, per-iteration metrics, stage boundaries.

Stage 6 vs 3 is decided by the run's history: once one iteration has at least ``exploit_phase_fraction`` of
its completions in an exploit stage (4 Direct Answer Hacker or 5 Step-by-Step Exploit; a minority phase
counts, by default a quarter), every later iteration labels concise well-formed completions 6 Reintegrated
Reasoning instead of 3 Concise Structurer.

The run's reference reasoning length, against which "drastically shortened" (stage 4) and "verbose" (stage 2)
are judged, is the median think-block length of the completions of the last ``reference_iterations``
iterations, the current one included (completions without a think block are left out).

A stage is *seen* (:func:`stage_sightings`) from the first iteration in which it holds at least
``seen_fraction`` of the completions; the run shows the study's order when the stages seen, taken in the order
they were first seen, have rising stage numbers (stages first seen in the same iteration count as in order).

Stage boundaries (:func:`stage_phases`): the dominant stage of an iteration is its most frequent one (ties
go to the lower stage number). The run starts in the dominant stage of its first iteration; a boundary is
the first iteration of a streak of at least ``min_iterations`` consecutive iterations dominated by a stage
other than the current one. Shorter streaks are noise and do not move the phase, so a new stage that
appears in the last ``min_iterations - 1`` iterations only is not marked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medrlvr.analysis.classifier import (
    EXPLOIT_STAGES,
    FLAGS,
    FORMAT_KINDS,
    CompletionAnalysis,
    Stage,
    classify,
    split_response,
)
from medrlvr.config import AnalysisConfig
from medrlvr.rewards.parsing import ParseRules

LENGTH_STATS = ("mean", "p50", "p90")


@dataclass
class StageTracker:
    """Classifies successive iterations of one run, remembering whether an exploit phase has happened and the
    reasoning lengths of its recent iterations."""

    cfg: AnalysisConfig
    exploit_phase_at: int | None = field(default=None)
    recent_lengths: deque[list[int]] = field(default_factory=deque)

    def reference_words(self, lengths: Sequence[int]) -> float | None:
        """The run's reference length with ``lengths`` (this iteration's think-block lengths) added to the window;
        ``None`` when no completion of the window has a think block."""
        pooled = [n for previous in self.recent_lengths for n in previous] + list(lengths)
        return float(np.median(pooled)) if pooled else None

    def classify_iteration(
        self,
        iteration: int,
        responses: Sequence[tuple[str, str]],
        rules: ParseRules = ParseRules(),
        options: Sequence[Mapping[str, str] | None] | None = None,
    ) -> list[CompletionAnalysis]:
        """Classify ``(response, letters)`` pairs of one iteration (read with the reward's ``rules`` and, when
        given, each question's ``options``), then update the run's history."""
        after_exploit = self.exploit_phase_at is not None
        given = options if options is not None else [None] * len(responses)
        lengths = [len(think.split()) for think in (split_response(text)[1] for text, _ in responses) if think is not None]
        reference = self.reference_words(lengths)
        analyses = [
            classify(text, letters, self.cfg, after_exploit, rules, question_options, reference)
            for (text, letters), question_options in zip(responses, given)
        ]
        self.recent_lengths.append(lengths)
        while len(self.recent_lengths) >= self.cfg.reference_iterations:
            self.recent_lengths.popleft()
        if not after_exploit and analyses:
            exploit = sum(a.stage in EXPLOIT_STAGES for a in analyses) / len(analyses)
            if exploit >= self.cfg.exploit_phase_fraction:
                self.exploit_phase_at = iteration
        return analyses


def stage_fractions(analyses: Sequence[CompletionAnalysis]) -> dict[Stage, float]:
    """Share of completions in each of the six stages (all six keys; they sum to 1 for a non-empty list)."""
    n = max(len(analyses), 1)
    return {stage: sum(a.stage == stage for a in analyses) / n for stage in Stage}


def length_stats(values: Iterable[int]) -> dict[str, float]:
    """Mean, median and 90th percentile (linear interpolation) of a list of lengths."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        return {name: 0.0 for name in LENGTH_STATS}
    return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)), "p90": float(np.percentile(array, 90))}


def flag_shares(analyses: Sequence[CompletionAnalysis]) -> dict[str, float]:
    """Share of completions with each flag of :data:`FLAGS`."""
    n = max(len(analyses), 1)
    return {name: sum(getattr(a, name) for a in analyses) / n for name in FLAGS}


def format_kind_shares(analyses: Sequence[CompletionAnalysis]) -> dict[str, float]:
    """Share of completions with each failure kind of :data:`FORMAT_KINDS` (the study's grouping of parser errors)."""
    n = max(len(analyses), 1)
    return {kind: sum(a.format_kind == kind for a in analyses) / n for kind in FORMAT_KINDS}


def iteration_metrics(analyses: Sequence[CompletionAnalysis]) -> dict[str, float]:
    """MLflow metrics of one iteration: ``stage/<slug>``, ``flag/<name>``, ``aha/phrases_mean``, lengths.

    ``stage/*`` and ``flag/*`` are shares of completions; ``aha/phrases_mean`` is the mean number of
    self-verification phrases; ``length/{response,reasoning}_words_{mean,p50,p90}`` count words.
    ``format_failure`` is not logged as a flag: it is 1 − ``reward/format_rate``, and the kinds of failure are
    the training module's ``format_error/*``.
    """
    metrics = {f"stage/{stage.slug}": value for stage, value in stage_fractions(analyses).items()}
    flags = flag_shares(analyses)
    metrics.update({f"flag/{name}": flags[name] for name in FLAGS if name != "format_failure"})
    metrics["aha/phrases_mean"] = sum(a.self_verification_count for a in analyses) / max(len(analyses), 1)
    for name in ("response", "reasoning"):
        stats = length_stats(getattr(a, f"{name}_words") for a in analyses)
        metrics.update({f"length/{name}_words_{key}": value for key, value in stats.items()})
    return metrics


def dominant_stage(fractions: Mapping[Stage, float]) -> Stage:
    """The most frequent stage; ties go to the lower stage number."""
    return max(sorted(fractions), key=lambda stage: fractions[stage])


@dataclass(frozen=True)
class StageSighting:
    """When a run showed a stage: the first iteration with at least the ``seen`` share (None: never), and its
    largest share with the first iteration that reached it."""

    stage: Stage
    first_seen: int | None
    peak_share: float
    peak_iteration: int


def stage_sightings(
    iterations: Sequence[int], fractions: Mapping[Stage, Sequence[float]], seen_fraction: float
) -> list[StageSighting]:
    """One :class:`StageSighting` per stage, in stage order; ``fractions[stage][n]`` is that stage's share of
    iteration ``iterations[n]``."""
    sightings = []
    for stage in Stage:
        shares = list(fractions[stage])
        if len(shares) != len(iterations):
            raise ValueError(f"{len(iterations)} iterations but {len(shares)} shares of {stage.title}")
        seen = next((i for i, share in zip(iterations, shares) if share >= seen_fraction), None)
        peak = max(range(len(shares)), key=lambda n: (shares[n], -n))
        sightings.append(StageSighting(stage, seen, shares[peak], iterations[peak]))
    return sightings


def seen_in_study_order(sightings: Sequence[StageSighting]) -> bool:
    """Whether the stages seen, in the order they were first seen, have rising stage numbers."""
    seen = sorted((s for s in sightings if s.first_seen is not None), key=lambda s: s.first_seen)
    return all(
        earlier.stage < later.stage or earlier.first_seen == later.first_seen for earlier, later in zip(seen, seen[1:])
    )


def stage_phases(iterations: Sequence[int], dominant: Sequence[Stage], min_iterations: int) -> list[tuple[int, Stage]]:
    """``(first iteration, stage)`` of each phase of the run; every entry after the first is a boundary."""
    if len(iterations) != len(dominant):
        raise ValueError(f"{len(iterations)} iterations but {len(dominant)} dominant stages")
    streaks: list[list] = []
    for iteration, stage in zip(iterations, dominant):
        if streaks and streaks[-1][1] == stage:
            streaks[-1][2] += 1
        else:
            streaks.append([iteration, stage, 1])
    phases: list[tuple[int, Stage]] = []
    for start, stage, length in streaks:
        if not phases or (stage != phases[-1][1] and length >= min_iterations):
            phases.append((start, stage))
    return phases


def classified_row(sample: Mapping, analysis: CompletionAnalysis) -> dict:
    """One completion and its classification as a flat table row.

    ``sample`` has at least ``response``; ``iteration``, ``id`` and ``answer`` are copied when present.
    """
    return {
        "iteration": sample.get("iteration"),
        "id": sample.get("id"),
        "stage": int(analysis.stage),
        "stage_name": analysis.stage.title,
        "flags": ",".join(analysis.flags()),
        "format_kind": analysis.format_kind,
        "letter": analysis.final_letter,
        "answer": sample.get("answer"),
        "reasoning_words": analysis.reasoning_words,
        "response_words": analysis.response_words,
        "self_verification": analysis.self_verification_count,
        "response": sample["response"],
    }


def example_rows(samples: Sequence[Mapping], analyses: Sequence[CompletionAnalysis], per_stage: int) -> list[dict]:
    """Up to ``per_stage`` :func:`classified_row` rows of each stage with distinct responses (stage order, then
    input order)."""
    rows = []
    for stage in Stage:
        seen: set[str] = set()
        for sample, analysis in zip(samples, analyses):
            if analysis.stage == stage and sample["response"] not in seen and len(seen) < per_stage:
                seen.add(sample["response"])
                rows.append(classified_row(sample, analysis))
    return rows
