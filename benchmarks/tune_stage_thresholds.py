"""Grid search of the stage classifier's thresholds on the ``tune`` half of the labelled set; prints the best.

    python benchmarks/tune_stage_thresholds.py [tests/analysis/data/labelled_stages.jsonl]

Scores each grid point by macro-F1 over the six stages on the tune rows, then by the F1 of the
``answer_in_reasoning`` flag; among equal scores the point closest to the defaults it starts from wins (fewest
changed values, then the smallest sum of relative changes). The chosen values go into ``conf/analysis/default.yaml`` and :class:`AnalysisConfig`; the
``report`` half is only measured afterwards (``python -m medrlvr.analyze --agreement FILE``).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

from medrlvr.analysis.agreement import Agreement, classify_labelled, flag_counts, load_labelled
from medrlvr.config import AnalysisConfig

GRID = {
    "short_reasoning_words": (5, 8, 10),
    "hacker_length_ratio": (0.4, 0.5, 0.6),
    "leak_window_words": (4, 6, 8),
    "leak_position_fraction": (0.3, 0.4, 0.5),
    "verbose_reasoning_words": (50, 60, 80, 100),
    "verbose_length_ratio": (1.25, 1.5, 2.0),
    "outside_reasoning_words": (5, 8, 12),
}


def score(rows: list[dict], cfg: AnalysisConfig) -> tuple[float, float]:
    analyses = classify_labelled(rows, cfg)
    macro = Agreement.of([r["stage"] for r in rows], [int(a.stage) for a in analyses]).macro_f1()
    tp, fp, fn = flag_counts(rows, analyses)["answer_in_reasoning"]
    return macro, 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def main(path: Path) -> None:
    rows = [row for row in load_labelled(path) if row["split"] == "tune"]
    defaults = AnalysisConfig()
    results = []
    for values in itertools.product(*GRID.values()):
        changes = {k: v for k, v in zip(GRID, values) if getattr(defaults, k) != v}
        cfg = dataclasses.replace(defaults, **changes)
        distance = sum(abs(v - getattr(defaults, k)) / getattr(defaults, k) for k, v in changes.items())
        results.append((*score(rows, cfg), -len(changes), -distance, changes))
    results.sort(key=lambda r: r[:4], reverse=True)
    print(f"{len(results)} grid points on {len(rows)} tune rows; defaults: macro-F1 {score(rows, defaults)[0]:.3f}")
    for macro, leak_f1, _, _, changes in results[:10]:
        print(f"macro-F1 {macro:.3f}  answer_in_reasoning F1 {leak_f1:.3f}  changes {changes}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/analysis/data/labelled_stages.jsonl"))
