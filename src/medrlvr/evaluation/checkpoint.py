"""The evaluation of a saved policy or a base model on named datasets, as ``python -m medrlvr.evaluate`` runs it.

A ``checkpoint`` saved by training is evaluated with its training prompt, format semantics, generation
settings and dtype (``policy/medrlvr_config.yaml``, :mod:`medrlvr.policy_config`) unless overridden.
Each dataset is a ``conf/data`` option (plus overrides in the mapping form) evaluated on its
``test_split``; by default the ``data`` group's choice, and its ``ood_split`` as ``<name>_ood`` when it has
one. Prints a table, writes ``evaluation.json`` and one ``records_<dataset>.jsonl`` per
dataset to the output folder, and logs everything to its own MLflow run (nested under
``parent_run_id`` when given).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from medrlvr.config import ConfigError, DataConfig, EvaluateConfig, LoggerConfig
from medrlvr.paths import default_tracking_uri
from medrlvr.data.compose import named_datasets
from medrlvr.data.lengths import fit_to_context
from medrlvr.data.registry import load_split_report
from medrlvr.data.loading import LoadedSplit
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import OPTION_LETTERS, MCQExample
from medrlvr.evaluation.policy import EvalResult, evaluate
from medrlvr.mlflow_ui import mark_model_training
from medrlvr.models.loading import load_causal_lm, load_tokenizer
from medrlvr.policy_config import POLICY_CONFIG, apply_policy_config, read_policy_config
from medrlvr.runtime import set_threads
from medrlvr.training import builders
from medrlvr.training.distributed import close_process_group
from medrlvr.training.preflight import check_output_dir, check_tracking_uri

log = logging.getLogger(__name__)

TABLE_COLUMNS = (
    ("questions", "num_questions", "{:.0f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("majority", "majority_accuracy", "{:.3f}"),
    ("format", "format_rate", "{:.3f}"),
    ("think words", "reasoning_words", "{:.1f}"),
    ("tokens", "response_tokens", "{:.1f}"),
    ("bias TV", "position_bias_tv", "{:.3f}"),
)


def checkpoint_settings(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Take the prompt, format semantics, generation settings and dtype of ``checkpoint``'s training config
    (``policy/medrlvr_config.yaml``) into ``cfg``, except where ``overrides`` set them; print and return them."""
    folder = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
    saved = read_policy_config(folder) if folder is not None and folder.is_dir() else None
    if saved is None:
        return {}
    taken = apply_policy_config(cfg, saved, overrides)
    print(f"from {folder / POLICY_CONFIG}: " + " ".join(f"{key}={value!r}" for key, value in taken.items()))
    return taken


def dataset_configs(cfg: EvaluateConfig) -> dict[str, DataConfig]:
    """The datasets to evaluate by name: ``datasets`` as a list of names or a name → overrides mapping, each
    with ``data.prompt`` unless its overrides set one; else the ``data`` group's choice, followed (as
    ``<name>_ood``) by its ``ood_split`` when it has one."""
    spec = cfg.datasets
    if spec is None:
        data = cfg.data
        if data.ood_split is None or data.ood_split == data.test_split:
            return {data.name: data}
        return {data.name: data, f"{data.name}_ood": dataclasses.replace(data, test_split=data.ood_split)}
    return named_datasets(spec, "datasets", cfg.data.prompt)


def load_model(cfg: EvaluateConfig) -> tuple[PreTrainedTokenizerBase, torch.nn.Module]:
    """Tokenizer and model of ``checkpoint`` (a saved policy folder; its tokenizer when it holds one) or of
    the base ``model.name_or_path``."""
    cache = Path(cfg.model.cache_dir) if cfg.model.cache_dir else None
    folder = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"checkpoint: no such folder: {folder}")
    if folder is not None and not (folder / "config.json").is_file():
        raise ConfigError(
            f"checkpoint: {folder} is not a saved policy (no config.json): pass the policy/ folder a training wrote"
        )
    has_tokenizer = folder is not None and (folder / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(folder) if has_tokenizer else cfg.model.name_or_path, cache)
    model = load_causal_lm(str(folder or cfg.model.name_or_path), tokenizer, getattr(torch, cfg.model.dtype), cache, cfg.seed)
    return tokenizer, model


def letter_table(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Shares of chosen and of correct letters, for every letter up to the largest option count."""
    most = max(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("accuracy_options_"))
    letters = OPTION_LETTERS[:most]
    return {kind: {x: metrics.get(f"{kind}_{x}", 0.0) for x in letters} for kind in ("chosen", "true")}


def by_option_count(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Accuracy and number of questions per option count."""
    counts = sorted(int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("accuracy_options_"))
    return {
        str(k): {"accuracy": metrics[f"accuracy_options_{k}"], "questions": metrics[f"questions_options_{k}"]}
        for k in counts
    }


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per dataset, then the letter distributions and the accuracy per option count."""
    header = ["dataset", "split", *[label for label, _, _ in TABLE_COLUMNS]]
    rows = [
        [name, r["split"], *[fmt.format(r["metrics"][key]) if key in r["metrics"] else "-" for _, key, fmt in TABLE_COLUMNS]]
        for name, r in results.items()
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    for name, r in results.items():
        letters = r["letters"]
        lines.append(f"{name} letters chosen: " + " ".join(f"{x} {v:.2f}" for x, v in letters["chosen"].items()))
        lines.append(f"{name} letters true:   " + " ".join(f"{x} {v:.2f}" for x, v in letters["true"].items()))
        lines.append(
            f"{name} accuracy by option count: "
            + ", ".join(f"{k}: {v['accuracy']:.3f} (n={v['questions']:.0f})" for k, v in r["by_option_count"].items())
        )
    return "\n".join(lines)


def log_to_mlflow(cfg: EvaluateConfig, results: dict[str, dict[str, Any]], records: dict[str, EvalResult], report: dict) -> str:
    """Log params, metrics (``<dataset>/<metric>``), the report and the completions; return the run id."""
    logger_cfg: LoggerConfig = cfg.logger
    tags = {"kind": "evaluation", **{t: "1" for t in cfg.tags}}
    if cfg.parent_run_id:
        client = MlflowClient(tracking_uri=logger_cfg.tracking_uri or default_tracking_uri())
        parent = client.get_run(cfg.parent_run_id)
        experiment = client.get_experiment(parent.info.experiment_id).name
        logger_cfg = dataclasses.replace(logger_cfg, experiment_name=experiment)
        tags["mlflow.parentRunId"] = cfg.parent_run_id
    logger_cfg = dataclasses.replace(logger_cfg, run_name=logger_cfg.run_name or "evaluate")
    logger = builders.build_logger(logger_cfg, tags=tags)
    mark_model_training(logger.experiment, logger.experiment_id)
    params = {
        "checkpoint": cfg.checkpoint, "model/name_or_path": cfg.model.name_or_path, "num_samples": cfg.num_samples,
        "temperature": cfg.temperature, "limit": cfg.limit, "max_new_tokens": cfg.rollout.eval_max_new_tokens,
        "datasets": ",".join(results), "seed": cfg.seed, "model/dtype": cfg.model.dtype,
        "rollout/backend": cfg.rollout.backend, "reward/format": cfg.reward.format,
        "reward/match_option_text": cfg.reward.match_option_text,
        **{f"prompt/{key}": value for key, value in dataclasses.asdict(cfg.data.prompt).items()},
    }
    params.update({f"{name}/data": r["data"] for name, r in results.items()})
    params.update({f"{name}/origin": r["origin"] for name, r in results.items()})
    params.update({f"{name}/split": r["split"] for name, r in results.items()})
    logger.log_hyperparams(params)
    logger.log_metrics({f"{name}/{key}": value for name, r in results.items() for key, value in r["metrics"].items()})
    logger.log_metrics({f"{name}/skipped_rows": float(len(r["skipped_rows"])) for name, r in results.items()})
    logger.experiment.log_dict(logger.run_id, report, "evaluation.json")
    for name, result in records.items():
        table = {key: [record[key] for record in result.records] for key in result.records[0]}
        logger.experiment.log_table(logger.run_id, data=table, artifact_file=f"records/{name}.json")
    logger.finish()
    return logger.run_id


def within_context(
    cfg: EvaluateConfig, data: DataConfig, loaded: LoadedSplit, tokenizer: PreTrainedTokenizerBase, context: int | None
) -> tuple[list[MCQExample], PromptBuilder]:
    """The first ``limit`` questions of ``loaded`` whose prompt plus ``rollout.eval_max_new_tokens`` fits the
    model's ``context`` (see :func:`fit_to_context`), and their prompt builder."""
    examples = loaded.examples[: cfg.limit] if cfg.limit else loaded.examples
    prompts = builders.build_prompt_builder(data.prompt, tokenizer)
    if context is not None:
        examples = fit_to_context(
            examples, builders.prompt_token_counter(prompts), context, cfg.rollout.eval_max_new_tokens,
            "rollout.eval_max_new_tokens", data.skip_long_prompts,
        )
    return examples, prompts


def run(cfg: EvaluateConfig, output_dir: Path) -> dict[str, Any]:
    """Evaluate ``cfg``'s model on each dataset; print, write and log the report, and return it."""
    check_tracking_uri(cfg.logger.tracking_uri or default_tracking_uri())  # before the evaluation, not after
    threads = set_threads(cfg.num_threads)
    L.seed_everything(cfg.seed, workers=True)
    datasets = dataset_configs(cfg)
    splits = {name: load_split_report(data, data.test_split, cfg.seed) for name, data in datasets.items()}
    tokenizer, model = load_model(cfg)
    context = getattr(model.config, "max_position_embeddings", None)
    # every dataset is read and checked against the model's context before any is evaluated
    questions = {name: within_context(cfg, data, splits[name], tokenizer, context) for name, data in datasets.items()}
    engine = builders.build_rollout_engine(cfg.rollout, model, tokenizer, cfg.seed)
    results: dict[str, dict[str, Any]] = {}
    evaluated: dict[str, EvalResult] = {}
    for name, data in datasets.items():
        loaded, (examples, prompts) = splits[name], questions[name]
        log.info("evaluating %s: %d questions from %s (torch threads: %d)", name, len(examples), loaded.origin, threads)
        result = evaluate(
            engine, prompts, examples, cfg.rollout.eval_max_new_tokens, tuple(cfg.rollout.stop_strings),
            temperature=cfg.temperature, num_samples=cfg.num_samples, seed=cfg.seed,
            rules=builders.parse_rules(cfg.reward),
        )
        evaluated[name] = result
        results[name] = {
            "data": data.name,
            "split": data.test_split,
            "origin": loaded.origin,
            "skipped_rows": [dataclasses.asdict(s) for s in loaded.skipped],
            "metrics": result.metrics,
            "letters": letter_table(result.metrics),
            "by_option_count": by_option_count(result.metrics),
        }
        with (output_dir / f"records_{name}.jsonl").open("w", encoding="utf-8") as handle:
            for record in result.records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    report = {
        "checkpoint": cfg.checkpoint,
        "model": cfg.model.name_or_path,
        "num_samples": cfg.num_samples,
        "temperature": cfg.temperature,
        "datasets": results,
    }
    report["mlflow_run_id"] = log_to_mlflow(cfg, results, evaluated, report)
    (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(format_table(results))
    log.info("wrote %s (MLflow run %s)", output_dir / "evaluation.json", report["mlflow_run_id"])
    return report


def evaluate_from_config(dict_cfg: DictConfig, default_output_dir: str, overrides: list[str]) -> float:
    """Evaluate with the composed config ``dict_cfg`` (``overrides``: the command line's, which win over the
    checkpoint's settings) into ``output_dir``, else ``default_output_dir``, closing the process group at the end;
    returns the first dataset's accuracy."""
    checkpoint_settings(dict_cfg, overrides)
    cfg: EvaluateConfig = OmegaConf.to_object(dict_cfg)  # type: ignore[assignment]
    folder = Path(cfg.output_dir or default_output_dir).resolve()
    try:
        report = run(cfg, check_output_dir(folder, "output_dir"))
    finally:
        close_process_group()
    return next(iter(report["datasets"].values()))["metrics"]["accuracy"]
