#!/usr/bin/env bash
# Create the separate virtual environment that benchmarks/trl_head_to_head.py runs TRL in (TRL is never a
# dependency of the project): bash benchmarks/trl_venv.sh [VENV, default: venv-trl beside the repository]
set -euo pipefail
venv="${1:-$(cd "$(dirname "$0")/../.." && pwd)/venv-trl}"
python="${PYTHON:-python3.11}"
"$python" -m venv "$venv"
# torch first, pinned like scripts/install.sh (an unpinned torch pulls a multi-GB CUDA build on a CPU machine);
# transformers pinned to the project's tested version so both sides run the same generate and model code.
"$venv/bin/python" -m pip install "torch==2.13.0"
"$venv/bin/python" -m pip install "trl==1.16.0" "peft==0.21.2" "transformers==5.23.0"
# The project itself is not installed: the TRL side imports its reward from src/ on PYTHONPATH.
"$venv/bin/python" -m pip check
