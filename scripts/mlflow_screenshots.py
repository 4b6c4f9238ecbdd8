"""Screenshots of MLflow's UI on a store: the experiment's runs view and one run's model-metrics charts.

    python scripts/mlflow_screenshots.py --store sqlite:///$PWD/mlflow.db --out docs/

Starts ``mlflow ui`` on 127.0.0.1 (a free port) and photographs its pages with headless Chromium
(``apt-get install chromium``). Without Chromium it prints ``skipped: chromium not found`` and exits 0.
Writes ``mlflow_runs.png`` and ``mlflow_run_charts.png`` (palette PNGs, to keep them small).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image

from medrlvr.mlflow_ui import local_ui

MODEL_TRAINING_VIEW = "workflowType=machine_learning"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, url: str, path: Path, size: tuple[int, int], budget_ms: int) -> Path:
    """One page rendered by headless Chromium after ``budget_ms`` of virtual time, saved as a palette PNG."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--run-all-compositor-stages-before-draw",
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url,
            ],
            check=True, capture_output=True, timeout=300,
        )
    Image.open(path).convert("RGB").quantize(colors=128).save(path, optimize=True)
    return path


def pick_run(client: MlflowClient, experiment: str | None, run_id: str | None) -> tuple[str, str]:
    """(experiment id, run id): the run given, else the latest finished run of ``experiment`` (default: the
    most recently created experiment other than ``Default``)."""
    if run_id:
        return client.get_run(run_id).info.experiment_id, run_id
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise SystemExit(f"error: no experiment {experiment!r} in the store")
        experiment_ids = [found.experiment_id]
    else:
        experiments = [e for e in client.search_experiments(order_by=["creation_time DESC"]) if e.name != "Default"]
        if not experiments:
            raise SystemExit("error: the store holds no experiment but Default")
        experiment_ids = [experiments[0].experiment_id]
    runs = client.search_runs(experiment_ids, "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    if not runs:
        raise SystemExit(f"error: experiment {experiment_ids[0]} holds no finished run")
    return experiment_ids[0], runs[0].info.run_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="MLflow store, e.g. sqlite:///$PWD/mlflow.db")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--experiment", help="experiment name (default: the newest one but Default)")
    parser.add_argument("--run-id", help="run whose charts to photograph (default: the experiment's latest finished run)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=850)
    parser.add_argument("--budget-ms", type=int, default=60000, help="virtual time Chromium gives each page to load")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"skipped: chromium not found (looked for {', '.join(BROWSERS)}; apt-get install chromium)")
        return 0
    experiment_id, run_id = pick_run(MlflowClient(args.store), args.experiment, args.run_id)
    args.out.mkdir(parents=True, exist_ok=True)
    # MLflow 3.17's UI shows the view of its "GenAI | Model training" switch (kept per browser, GenAI in a
    # fresh one) whatever the experiment's kind tag says; the workflowType parameter sets it for the page
    pages = {
        "mlflow_runs.png": f"#/experiments/{experiment_id}?{MODEL_TRAINING_VIEW}",
        "mlflow_run_charts.png": f"#/experiments/{experiment_id}/runs/{run_id}/model-metrics?{MODEL_TRAINING_VIEW}",
    }
    with local_ui(args.store) as url:
        for name, page in pages.items():
            path = screenshot(browser, f"{url}/{page}", args.out / name, (args.width, args.height), args.budget_ms)
            print(f"wrote {path} ({path.stat().st_size // 1024} KB): {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
