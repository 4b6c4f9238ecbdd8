"""``scripts/gpu_smoke.sh --cpu``: every step passes or is skipped for a stated reason."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("cuda", "zero2", "vllm", "zero3_resume", "memory_plan")


def test_cpu_smoke_steps_pass_or_are_skipped(tmp_path: Path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        ["bash", "scripts/gpu_smoke.sh", "--cpu", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    lines = {m.group(2): m for m in re.finditer(r"^(PASS|SKIP|FAIL) (\w+) [\d.]+ s(?:: (.+))?$", result.stdout, re.M)}
    assert tuple(lines) == STEPS, result.stdout
    for name, line in lines.items():
        assert line.group(1) == "PASS" or line.group(1) == "SKIP" and line.group(3), result.stdout
    assert lines["zero2"].group(1) == lines["zero3_resume"].group(1) == "PASS", result.stdout
    assert result.returncode == 0, result.stdout
