"""The trained policy as an MLflow model (MLflow's transformers flavour, task ``text-generation``), linked to
its run as a LoggedModel so it shows under the run's "Logged models" and can be registered.

``trainer.log_model``: ``true`` logs the whole policy (LoRA merged) with its tokenizer; ``adapters`` logs only
the LoRA adapters and a reference to the base model: a folder path (the bundled model's converted copy, or a
local model folder) that must exist where the model is loaded, or a hub id that MLflow pins to the hub's current commit (the hub must be reachable when logging and loading).
A policy with no adapters (``model.lora_rank=0``) or whose base exists nowhere (``model=tiny``, built from a
config) is logged whole instead, with a warning. ``false`` logs no model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow
import torch
from mlflow.environment_variables import MLFLOW_TRACKING_URI
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from transformers import PreTrainedTokenizerBase

from medrlvr.data.prompts import PromptBuilder
from medrlvr.models.loading import TINY_MODEL, resolve_model_path

log = logging.getLogger(__name__)

MODEL_NAME = "policy"


def base_model_path(name_or_path: str) -> str | None:
    """The folder an adapters-only model loads its base from; None for a hub id (MLflow references the hub)."""
    resolved = resolve_model_path(name_or_path)
    return resolved if Path(resolved).is_dir() else None


def signature(max_new_tokens: int) -> ModelSignature:
    """A question with its lettered options in (string), the completion after the prompt's pre-fill out
    (string); ``max_new_tokens`` may be passed at inference."""
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]),
        outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema([ParamSpec("max_new_tokens", DataType.long, max_new_tokens)]),
    )


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """MLflow's global store set to ``uri`` for the block (``log_model`` writes into the active run of the
    global store), then restored with the ``MLFLOW_TRACKING_URI`` variable that MLflow unsets on the way."""
    variable = os.environ.get(MLFLOW_TRACKING_URI.name)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if variable is not None:
            os.environ[MLFLOW_TRACKING_URI.name] = variable


def requirements(adapters_only: bool) -> list[str]:
    """The installed versions the model loads with (MLflow would otherwise infer them by loading the model
    again in a subprocess)."""
    packages = ["torch", "transformers", "accelerate"] + (["peft"] if adapters_only else [])
    return [f"{name}=={version(name)}" for name in packages]


def log_policy_model(
    tracking_uri: str,
    run_id: str,
    mode: str,
    policy: torch.nn.Module,
    adapters: torch.nn.Module | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptBuilder,
    base_model: str,
    max_new_tokens: int,
) -> ModelInfo | None:
    """Log the policy into run ``run_id`` as the MLflow model ``policy`` (``mode`` = ``trainer.log_model``).

    ``policy``: the transformers model (LoRA merged); ``adapters``: the peft-wrapped policy, or None
    without LoRA; ``base_model``: ``model.name_or_path``. The model's pyfunc formats its input with the
    project's prompt (``prompt_template``) and decodes greedily."""
    if mode == "false":
        return None
    adapters_only = mode == "adapters" and adapters is not None and base_model != TINY_MODEL
    if mode == "adapters" and not adapters_only:
        reason = "it has no LoRA adapters (model.lora_rank=0)" if adapters is None else f"{base_model} has no saved base"
        log.warning("trainer.log_model=adapters: logging the whole policy, as %s", reason)
    with tracking_store(tracking_uri), mlflow.start_run(run_id=run_id):
        return mlflow.transformers.log_model(
            {"model": adapters if adapters_only else policy, "tokenizer": tokenizer},
            name=MODEL_NAME,
            task="text-generation",
            signature=signature(max_new_tokens),
            prompt_template=prompts.format_template(),
            model_config={"max_new_tokens": max_new_tokens, "do_sample": False},
            metadata={"base_model": base_model, "response_prefix": prompts.prefix, "adapters_only": adapters_only},
            pip_requirements=requirements(adapters_only),
            base_model_path=base_model_path(base_model) if adapters_only else None,
        )
