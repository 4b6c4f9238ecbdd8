"""The linter the project configures (ruff, `[tool.ruff]` in pyproject.toml) passes on the code, the tests,
the benchmarks and the scripts; CI runs it through `python -m pytest`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m ruff check` with the project's configuration, in this interpreter's environment."""
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(PYPROJECT), *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "No module named ruff" not in result.stderr, "ruff is missing: pip install -e '.[dev]'"
    return result


def test_ruff_passes_on_the_project():
    result = ruff("src", "tests", "benchmarks", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_reports_what_the_configured_rules_forbid(tmp_path):
    # An unused import (F401) and an ambiguous name (E741): a configuration that selected nothing would pass above.
    (tmp_path / "bad.py").write_text("import os\n\nl = 1\n")
    result = ruff("bad.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "F401" in result.stdout and "E741" in result.stdout, result.stdout
