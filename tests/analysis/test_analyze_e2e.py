"""End-to-end: train the tiny model for 3 PPO iterations with the real CLI, then analyse the run and its eval table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from medrlvr.analysis.classifier import Stage

pytestmark = pytest.mark.slow


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_then_analyze_run_and_eval_table(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(
        tmp_path, "medrlvr.train", "experiment=smoke", "trainer.max_steps=3", "trainer.num_threads=1",
        f"logger.tracking_uri={uri}", "logger.experiment_name=analysis", f"trainer.output_dir={tmp_path / 'out'}",
        "trainer.save_model=false", "trainer.eval_after=false",
    )
    client = MlflowClient(tracking_uri=uri)
    (train_run,) = client.search_runs([client.get_experiment_by_name("analysis").experiment_id])
    run_id = train_run.info.run_id

    histories = {s: {m.step: m.value for m in client.get_metric_history(run_id, f"stage/{s.slug}")} for s in Stage}
    for step in (1, 2, 3):
        assert sum(histories[s][step] for s in Stage) == pytest.approx(1.0)

    out = tmp_path / "report"
    result = run(tmp_path, "medrlvr.analyze", run_id, "--tracking-uri", uri, "--output", str(out))
    assert str(out / "report.md") in result.stdout
    for name in ("stage_fractions.png", "training_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert re.search(r"\| from iteration \| dominant stage \|\n\|---\|---\|\n\| 1 \| [1-6] [A-Z]", report)
    assert re.search(r"## Stages seen\n\nA stage is seen from .* Seen: [1-6] of 6 stages, in the order 1", report)
    assert "## Stage fractions at the first and last iteration" in report and "iteration 3" in report
    assert "### 1 Format Failure" in report
    logged = {a.path for a in client.list_artifacts(run_id, "analysis")}
    assert logged == {"analysis/report.md", "analysis/stage_fractions.png", "analysis/training_curves.png"}

    table = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval/bundled_validation.json", tracking_uri=uri, dst_path=str(tmp_path))
    run(tmp_path, "medrlvr.analyze", table, "--output", str(tmp_path / "eval_report"), "--letters", "ABCDE")
    assert "4 completions" in (tmp_path / "eval_report" / "report.md").read_text()
    assert (tmp_path / "eval_report" / "stage_fractions.png").is_file()
