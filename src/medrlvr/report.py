"""Compare the trials of a sweep: ``python -m medrlvr.report <experiment> [--parent RUN_ID] [--out DIR]``.

Without ``--parent`` the latest sweep of the experiment is reported. What it prints, writes and logs:
:mod:`medrlvr.sweeping.sweep_report`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError
from medrlvr.paths import default_tracking_uri
from medrlvr.sweeping.sweep_report import default_report_dir, find_parent_run, load_sweep, report_sweep


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m medrlvr.report", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", help="MLflow experiment of the sweep (e.g. sweep-kl_coef)")
    parser.add_argument("--parent", help="parent run id of the sweep (default: the experiment's latest sweep)")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<experiment>)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///$PWD/mlflow.db)")
    parser.add_argument("--top", type=int, default=3, help="number of best trials whose curves are plotted")
    parser.add_argument("--optuna-storage", help="Optuna storage URL when it differs from the one the sweep used")
    args = parser.parse_args(argv)
    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    try:
        sweep = load_sweep(client, args.parent or find_parent_run(client, args.experiment))
    except (ConfigError, MlflowException) as err:  # no such experiment, sweep or run
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    report_sweep(client, sweep, args.out or default_report_dir(args.experiment), args.top, args.optuna_storage)


if __name__ == "__main__":
    main()
