"""``scripts/mlflow_screenshots.py``: real pictures of MLflow's UI where Chromium is installed, a stated skip
where it is not."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from medrlvr.mlflow_ui import mark_model_training

pytestmark = pytest.mark.slow  # starts mlflow ui and a browser (about a minute)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "mlflow_screenshots.py"


def run_script(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **({"PATH": path} if path is not None else {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture
def store(tmp_path):
    """A store with one finished run of a tagged experiment, a reward logged over three iterations."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("medrlvr", artifact_location=str(tmp_path / "artifacts"))
    mark_model_training(client, experiment)
    run_id = client.create_run(experiment, run_name="tiny").info.run_id
    for step, value in enumerate((0.1, 0.4, 0.8), start=1):
        client.log_metric(run_id, "reward/mean", value, step=step)
    client.set_terminated(run_id)
    return uri


def test_screenshots_of_the_runs_view_and_a_runs_charts_are_not_blank(store, tmp_path):
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    result = run_script("--store", store, "--out", str(tmp_path / "shots"))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("mlflow_runs.png", "mlflow_run_charts.png"):
        image = Image.open(tmp_path / "shots" / name).convert("L")
        assert image.size == (1400, 850)
        low, high = image.getextrema()
        assert high - low > 100, name  # text on a background, not one flat colour
        assert len(image.getcolors(maxcolors=256 * 256)) > 10, name


def test_without_chromium_it_says_skipped(store, tmp_path):
    result = run_script("--store", store, "--out", str(tmp_path / "shots"), path=str(Path(sys.executable).parent))
    assert result.returncode == 0 and result.stdout.startswith("skipped: chromium not found"), result.stdout
    assert not (tmp_path / "shots").exists()
