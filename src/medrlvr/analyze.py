"""Reasoning-stage analysis: ``python -m medrlvr.analyze <run id | completions file> [--tracking-uri URI]``.

For an MLflow run or a file of completions it writes plots and ``report.md`` into the output folder
(:mod:`medrlvr.analysis.stage_analysis`). ``--agreement FILE`` reads a labelled file
(:mod:`medrlvr.analysis.agreement`) and prints the classifier's confusion matrix, per-stage precision/recall/F1
and per-flag agreement on ``--split`` (default ``report``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medrlvr.analysis.agreement import SPLITS, agreement_report
from medrlvr.analysis.stage_analysis import analyze_target, config_from
from medrlvr.data.schema import OPTION_LETTERS
from medrlvr.rewards.parsing import FORMATS, ParseRules


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(prog="python -m medrlvr.analyze", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="an MLflow run id, or a .json/.jsonl file of completions")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///$PWD/mlflow.db)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: ./analysis/<run id or file stem>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an analysis threshold")
    parser.add_argument("--letters", default=OPTION_LETTERS, help="option letters of rows without a 'letters' field (files)")
    parser.add_argument(
        "--format", choices=FORMATS, default="strict", help="the training run's reward.format (files; default strict)"
    )
    parser.add_argument("--no-log", action="store_true", help="do not log the plots and report to the run")
    parser.add_argument(
        "--agreement", action="store_true", help="the file is a labelled set: print the classifier's agreement with it"
    )
    parser.add_argument(
        "--split", choices=(*SPLITS, "all"), default="report", help="rows of the labelled set to measure (--agreement)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; bad input prints one line and returns 2."""
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.agreement:
            _, text = agreement_report(Path(args.target), None if args.split == "all" else args.split, config_from({}, args.set))
            print(text)
            return 0
        report = analyze_target(
            args.target, args.output, args.set, args.letters, ParseRules(format=args.format), args.tracking_uri,
            not args.no_log,
        )
    except ValueError as err:  # DatasetError and ConfigError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {report.resolve()}")
    print(f"plots: {', '.join(str(p.resolve()) for p in sorted(report.parent.glob('*.png')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
