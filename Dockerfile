# medrlvr for NVIDIA GPUs: CUDA runtime, Python 3.11, the project installed by scripts/install.sh (the README's
# install) with its GPU extras. On Linux x86-64 PyPI's torch wheel is the CUDA build, so the pinned torch that
# install.sh installs first is the GPU one here.
#   docker build -t medrlvr:gpu .
#   docker run --gpus all --ipc=host -v "$PWD":/work medrlvr:gpu experiment=med_rlvr data.path=/work/medqa/US
# Outputs and the MLflow store (./mlflow.db) go to the mounted /work; configs are read from /app/conf whatever the
# working directory.
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE}

# Comma-separated extras of pyproject.toml (deepspeed: ZeRO-2/3 strategies; vllm: rollout=vllm, which may
# move torch to the version vLLM's CUDA build needs).
ARG EXTRAS=deepspeed,vllm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MEDRLVR_CACHE=/cache DEBIAN_FRONTEND=noninteractive

# Python 3.11 from the distribution when the base image has none; versions follow the base image's release.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi && python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY conf ./conf
COPY sweeps ./sweeps
COPY src ./src
# The bundled model is converted once at build time, so the default run needs no network.
RUN bash scripts/install.sh "${EXTRAS}" \
    && python -c "from medrlvr.models.loading import resolve_model_path, BUNDLED_MODEL; resolve_model_path(BUNDLED_MODEL)"

WORKDIR /work
ENTRYPOINT ["python", "-m", "medrlvr.train"]
