"""Agreement of the stage classifier with hand labels: confusion matrix, per-stage precision/recall, macro-F1.

A labelled file is JSONL, one completion per row with: ``response``, ``letters`` and ``options`` (the question),
``format`` (the run's ``reward.format``), ``reference_words`` (the run's reference reasoning length, or null)
and ``after_exploit`` (whether an exploit phase came earlier in the run): what the classifier needs; then the
labels ``stage`` (1-6) and ``flags`` (names among :data:`LABELLED_FLAGS`), and ``split`` (``tune`` or ``report``:
thresholds are tuned on the first and measured on the second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrlvr.analysis.classifier import CompletionAnalysis, Stage, classify
from medrlvr.analysis.io import load_completions
from medrlvr.analysis.stage_report import table
from medrlvr.config import AnalysisConfig
from medrlvr.data.schema import DatasetError
from medrlvr.rewards.parsing import FORMATS, ParseRules

SPLITS = ("tune", "report")
# flags a reader can label by meaning; format_failure, short_reasoning and verbose follow from the parser and lengths
LABELLED_FLAGS = ("answer_in_reasoning", "reasoning_before_think", "contradiction", "copies_example", "self_verification")
_EXPECTED = {
    "stage": "a stage number 1-6",
    "split": f"one of {', '.join(SPLITS)}",
    "format": f"one of {', '.join(FORMATS)}",
    "after_exploit": "true or false",
    "flags": f"a list of names among {', '.join(LABELLED_FLAGS)}",
    "options": "option texts by letter",
    "reference_words": "a positive number of words or null",
}


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """Rows of a labelled file, checked; a bad row raises :class:`DatasetError` naming its line and key."""
    rows = load_completions(path)
    source = str(path)
    for number, row in enumerate(rows, start=1):
        checks = {
            "stage": type(row.get("stage")) is int and row["stage"] in [int(s) for s in Stage],
            "split": row.get("split") in SPLITS,
            "format": row.get("format") in FORMATS,
            "after_exploit": isinstance(row.get("after_exploit"), bool),
            "flags": isinstance(row.get("flags"), list) and all(f in LABELLED_FLAGS for f in row["flags"]),
            "options": isinstance(row.get("options"), dict),
        }
        reference = row.get("reference_words")
        checks["reference_words"] = reference is None or (
            isinstance(reference, (int, float)) and not isinstance(reference, bool) and reference > 0
        )
        for key, ok in checks.items():
            if not ok:
                raise DatasetError(source, number, key, f"expected {_EXPECTED[key]}, got {row.get(key)!r}")
    return rows


def classify_labelled(rows: Sequence[dict[str, Any]], cfg: AnalysisConfig) -> list[CompletionAnalysis]:
    """Each row classified with its own run context (format, reference length, exploit history)."""
    return [
        classify(
            row["response"],
            row["letters"],
            cfg,
            after_exploit=row["after_exploit"],
            rules=ParseRules(format=row["format"]),
            options=row["options"],
            reference_words=row["reference_words"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Agreement:
    """``matrix[i][j]``: completions labelled stage ``i + 1`` that the classifier put in stage ``j + 1``."""

    matrix: list[list[int]]

    @classmethod
    def of(cls, labels: Sequence[int], predicted: Sequence[int]) -> Agreement:
        if len(labels) != len(predicted):
            raise ValueError(f"{len(labels)} labels but {len(predicted)} predictions")
        matrix = [[0] * len(Stage) for _ in Stage]
        for label, guess in zip(labels, predicted):
            matrix[label - 1][guess - 1] += 1
        return cls(matrix)

    def precision(self, stage: Stage) -> float:
        """Share of the completions put in ``stage`` that are labelled so (0 when none is put there)."""
        column = sum(row[stage - 1] for row in self.matrix)
        return self.matrix[stage - 1][stage - 1] / column if column else 0.0

    def recall(self, stage: Stage) -> float:
        """Share of the completions labelled ``stage`` that are put there (0 when none is labelled so)."""
        row = sum(self.matrix[stage - 1])
        return self.matrix[stage - 1][stage - 1] / row if row else 0.0

    def f1(self, stage: Stage) -> float:
        p, r = self.precision(stage), self.recall(stage)
        return 2 * p * r / (p + r) if p + r else 0.0

    def macro_f1(self) -> float:
        """Mean of the six per-stage F1 scores."""
        return sum(self.f1(stage) for stage in Stage) / len(Stage)

    def accuracy(self) -> float:
        total = sum(map(sum, self.matrix))
        return sum(self.matrix[i][i] for i in range(len(Stage))) / total if total else 0.0


def flag_counts(rows: Sequence[dict[str, Any]], analyses: Sequence[CompletionAnalysis]) -> dict[str, tuple[int, int, int]]:
    """Per labelled flag: ``(true positives, false positives, false negatives)`` of the classifier's flag."""
    counts = {}
    for name in LABELLED_FLAGS:
        pairs = [(name in row["flags"], bool(getattr(a, name))) for row, a in zip(rows, analyses)]
        counts[name] = (
            sum(label and flag for label, flag in pairs),
            sum(flag and not label for label, flag in pairs),
            sum(label and not flag for label, flag in pairs),
        )
    return counts


def agreement_report(path: Path, split: str | None, cfg: AnalysisConfig) -> tuple[Agreement, str]:
    """The agreement on ``split`` (``None``: every row) of a labelled file, and a Markdown report of it."""
    rows = [row for row in load_labelled(path) if split is None or row["split"] == split]
    if not rows:
        raise DatasetError(str(path), None, "split", f"no row in split {split!r}")
    analyses = classify_labelled(rows, cfg)
    agreement = Agreement.of([row["stage"] for row in rows], [int(a.stage) for a in analyses])
    names = [f"{s.value} {s.slug}" for s in Stage]
    confusion = table(["label \\ classified", *(str(s.value) for s in Stage)], [(n, *r) for n, r in zip(names, agreement.matrix)])
    per_stage = table(
        ["stage", "labelled", "precision", "recall", "F1"],
        [(s.title, sum(agreement.matrix[s - 1]), agreement.precision(s), agreement.recall(s), agreement.f1(s)) for s in Stage],
    )
    flags = table(
        ["flag", "labelled", "flagged", "precision", "recall"],
        [
            (f"`{name}`", tp + fn, tp + fp, tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0)
            for name, (tp, fp, fn) in flag_counts(rows, analyses).items()
        ],
    )
    summary = (
        f"{len(rows)} labelled completions ({split or 'all splits'}) of `{path.name}`: accuracy "
        f"{agreement.accuracy():.3f}, macro-F1 {agreement.macro_f1():.3f}."
    )
    text = "\n\n".join([summary, "Confusion matrix (rows: label, columns: classifier)", confusion, per_stage, flags])
    return agreement, text
