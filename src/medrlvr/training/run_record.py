"""What a training run records about itself in MLflow besides metrics: a description (the run page's note), the
questions of each split as MLflow dataset inputs, and, on request, MLflow's own system metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow.data
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from medrlvr.config import DataConfig, TrainConfig
from medrlvr.data.bundled import BUNDLED_DIR, split_path
from medrlvr.data.compose import heldout_sets, set_name
from medrlvr.data.loading import resolve_hub_name
from medrlvr.data.registry import SOURCES
from medrlvr.data.schema import MCQExample
from medrlvr.training.completions import options_text

NOTE_TAG = "mlflow.note.content"  # the run page's description


def description(cfg: TrainConfig, eval_sets: list[str], command: str | None) -> str:
    """The run's description (Markdown): model, algorithm, reward, data and the command that started it."""
    lora = f" (LoRA rank {cfg.model.lora_rank})" if cfg.model.lora_rank else ""
    lines = [
        f"- **model** `{cfg.model.name_or_path}`{lora}",
        f"- **algorithm** {cfg.algo.name}",
        f"- **reward** {cfg.reward.name} (format {cfg.reward.format})",
        f"- **data** {cfg.data.name}: trains on `{cfg.data.train_split}`, evaluates {', '.join(eval_sets) or 'nothing'}",
    ]
    if command:
        lines.append(f"- **command** `{command}`")
    return "\n".join(lines)


def dataset_source(data: DataConfig, split: str) -> DatasetSource | str:
    """Where ``split`` of ``data`` is read from: the bundled file, ``data.path``, or its Hugging Face hub id."""
    if data.name == "bundled":
        return str(split_path(split, BUNDLED_DIR))
    if data.path:
        return data.path
    spec = SOURCES[data.name]
    return HuggingFaceDatasetSource(
        path=resolve_hub_name(spec, data), config_name=spec.hub_config, split=spec.hub_splits.get(split, split)
    )


def dataset_input(name: str, examples: list[MCQExample], source: DatasetSource | str, context: str) -> DatasetInput:
    """``examples`` as an MLflow dataset (id, question, options, answer; MLflow computes its digest) used in
    ``context`` (``training`` or ``eval``)."""
    frame = pd.DataFrame(
        {
            "id": [e.id for e in examples],
            "question": [e.question for e in examples],
            "options": [options_text(e.options) for e in examples],
            "answer": [e.answer for e in examples],
        }
    )
    dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets="answer")
    return DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_datasets(
    client: MlflowClient, run_id: str, cfg: TrainConfig, train: list[MCQExample], evals: dict[str, list[MCQExample]]
) -> None:
    """Record the training questions (``<data>_<train_split>``, context ``training``) and each evaluation set
    (named as its metrics, context ``eval``) as the run's dataset inputs."""
    data, split = cfg.data, cfg.data.train_split
    inputs = [dataset_input(set_name(data.name, split), train, dataset_source(data, split), "training")]
    sets = heldout_sets(data, cfg.trainer.eval_ood)
    inputs += [dataset_input(name, examples, dataset_source(*sets[name]), "eval") for name, examples in evals.items()]
    client.log_inputs(run_id, datasets=inputs)


@contextmanager
def system_metrics(enabled: bool, run_id: str, tracking_uri: str, resumed: bool) -> Iterator[None]:
    """While the block runs, MLflow's system metrics monitor samples CPU, memory, disk, network (and GPU when
    present) into the run as ``system/*`` (every 10 s, ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``)."""
    if not enabled:
        yield
        return
    monitor = SystemMetricsMonitor(run_id, tracking_uri=tracking_uri, resume_logging=resumed)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
