"""Base vs SFT vs RLVR, in and out of distribution, over seeds, from MLflow runs:
``python -m medrlvr.compare [experiments=[NAME,...]] [run_ids=[ID,...]] [hydra overrides]``.

Reads the finished runs of ``experiments`` (default ``medrlvr``) and ``run_ids`` in ``tracking_uri``
(default ``sqlite:///$PWD/mlflow.db``), with the evaluation runs nested under them:

- a training run (``python -m medrlvr.train``) evaluates each of its sets (``data/eval_split``, ``data/ood_split``
  with ``trainer.eval_ood=true``, each of ``data.eval_sets``; data and split in its ``eval_set/<set>/*`` params)
  as ``eval/<set>/*``: the value at step 0 (from the metric's history) measures the base model, the value at
  the run's last step after 0 the trained one. The trained method is ``SFT`` when ``algo/name`` is ``sft``, else
  ``RLVR (<algo/name>)``;
- an evaluation run (``python -m medrlvr.evaluate``) measures ``<dataset>/*`` on each dataset's split: the
  ``base`` model without a checkpoint, else the method of the training run it is nested under
  (``parent_run_id``); prompted with ``data.prompt.style=direct`` (answer without reasoning), the method
  gets `` (direct)``: ``base (direct)`` next to ``base``, the base model prompted to reason (CoT).

A dataset (``<data name>/<split>``) is in distribution (ID) when a training run trained on that data and it is
not the data's ``ood_split``; otherwise out of distribution (OOD) (``in_distribution`` overrides). Each cell (model, method, dataset,
number of questions) holds one value per seed — the training run's ``seed``; when two runs share a seed the
latest is kept, with a note unless both measure the base model alike (every training run of a seed
measures it again) — and reports their mean and, from two seeds on, a t-distribution
confidence interval. Prints the table and writes ``compare.md``, ``compare.csv``, ``compare.json`` and
``compare.png`` (bars with the intervals) to the output folder.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from scipy import stats

from medrlvr.config import CompareConfig, ConfigError, config_dir, default_tracking_uri, register_configs

register_configs()
BASE = "base"
MISSING_PARAM = ("", "None")


class CompareError(ValueError):
    """No usable runs, or a run or experiment that does not exist; the message names them."""


@dataclass(frozen=True)
class Measurement:
    """One model's evaluation on one dataset, read from one run."""

    model: str
    method: str
    dataset: str
    questions: int
    seed: str
    run_id: str
    start_time: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Stat:
    """Mean of ``n`` per-seed values; ``std`` (sample) and the confidence interval need ``n >= 2``."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float:
        return 0.0 if self.ci_high is None else self.ci_high - self.mean


@dataclass(frozen=True)
class Cell:
    """The values of one method on one dataset, one per seed, and their statistics per metric."""

    model: str
    method: str
    distribution: str
    dataset: str
    questions: int
    seeds: list[str]
    run_ids: list[str]
    values: dict[str, list[float]]
    stats: dict[str, Stat]

    @property
    def column(self) -> str:
        """The dataset's table heading, e.g. ``OOD bundled/ood (140 q)``."""
        return f"{self.distribution} {self.dataset} ({self.questions} q)".strip()


def t_interval(values: list[float], confidence: float) -> Stat:
    """Mean ± t_{(1+confidence)/2, n-1} · s / √n (s: sample standard deviation); no interval for one value."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Stat(n, mean, None, None, None)
    std = statistics.stdev(values)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Stat(n, mean, std, mean - half, mean + half)


def _all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def select_runs(client: MlflowClient, experiments: list[str], run_ids: list[str]) -> tuple[list[Run], list[str]]:
    """The finished runs of ``experiments``, the runs ``run_ids`` and the runs nested under those, and notes
    about selected runs that are not finished."""
    runs: dict[str, Run] = {}
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            names = sorted(e.name for e in client.search_experiments())
            raise CompareError(f"no MLflow experiment {name!r} in {client.tracking_uri}; experiments: {names}")
        runs.update((run.info.run_id, run) for run in _all_runs(client, [experiment.experiment_id]))
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            raise CompareError(f"no MLflow run {run_id!r} in {client.tracking_uri}") from err
        runs[run_id] = run
        nested = _all_runs(client, [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
        runs.update((child.info.run_id, child) for child in nested)
    notes = [
        f"skipped run {run.info.run_id} ({run.info.run_name}): status {run.info.status}"
        for run in runs.values()
        if run.info.status != "FINISHED"
    ]
    return [run for run in runs.values() if run.info.status == "FINISHED"], notes


def is_training_run(run: Run) -> bool:
    return "algo/name" in run.data.params


def method_name(params: dict[str, str], group_by: list[str]) -> str:
    """``SFT`` or ``RLVR (<algo>)``, followed by the ``group_by`` params' values."""
    algo = params["algo/name"]
    name = "SFT" if algo == "sft" else f"RLVR ({algo})"
    extra = " ".join(f"{key}={params.get(key, '?')}" for key in group_by)
    return f"{name} {extra}" if extra else name


def _measurement(
    run: Run, values: dict[str, float], prefix: str, model: str, method: str, dataset: str, seed: str,
    metrics: list[str],
) -> Measurement | None:
    """The ``<prefix>*`` metrics of ``run`` among ``values`` (None without ``<prefix>accuracy``)."""
    if f"{prefix}accuracy" not in values:
        return None
    return Measurement(
        model=model,
        method=method,
        dataset=dataset,
        questions=int(values.get(f"{prefix}num_questions", 0)),
        seed=seed,
        run_id=run.info.run_id,
        start_time=run.info.start_time or 0,
        metrics={key: values[prefix + key] for key in metrics if prefix + key in values},
    )


def training_datasets(params: dict[str, str]) -> dict[str, str]:
    """A training run's evaluated sets by metric name (``eval/<set>/*``) with their dataset labels, from its
    ``eval_set/<set>/data`` and ``eval_set/<set>/split`` params."""
    names = [key.split("/")[1] for key in params if key.startswith("eval_set/") and key.endswith("/data")]
    return {
        name: dataset_label(name, params[f"eval_set/{name}/data"], params.get(f"eval_set/{name}/split", "?"))
        for name in names
    }


def base_and_trained(client: MlflowClient, run_id: str, keys: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Each of ``keys`` at step 0 (the base model) and at the run's last step after 0 (the trained model), from
    the metric histories; a key without such a step is left out."""
    base, trained = {}, {}
    for key in keys:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        first = [m.value for m in history if m.step == 0]
        later = [m.value for m in history if m.step > 0]
        base.update({key: first[-1]} if first else {})
        trained.update({key: later[-1]} if later else {})
    return base, trained


def training_measurements(client: MlflowClient, run: Run, group_by: list[str], metrics: list[str]) -> list[Measurement]:
    """Base (step 0) and trained (last step) measurements of a training run on each of its evaluation sets."""
    params = run.data.params
    model, seed, method = params.get("model/name_or_path", ""), params.get("seed", ""), method_name(params, group_by)
    found = []
    for name, dataset in training_datasets(params).items():
        prefix = f"eval/{name}/"
        keys = [prefix + key for key in dict.fromkeys(["accuracy", "num_questions", *metrics])]
        base, trained = base_and_trained(client, run.info.run_id, [k for k in keys if k in run.data.metrics])
        for values, label in ((base, BASE), (trained, method)):
            found.append(_measurement(run, values, prefix, model, label, dataset, seed, metrics))
    return [m for m in found if m is not None]


def dataset_label(key: str, data: str, split: str) -> str:
    """``<data>/<split>``, followed by ``[<key>]`` when the evaluation's dataset key is not just ``<data>`` or
    ``<data>_<split>``: Medbullets and MedQA both load as ``medqa/test`` and must not share a cell."""
    label = f"{data}/{split}"
    return label if key in (data, f"{data}_{split}") else f"{label} [{key}]"


def evaluation_measurements(run: Run, parent: Run | None, group_by: list[str], metrics: list[str]) -> list[Measurement]:
    """One measurement per dataset of an evaluation run; its method comes from the training run above it."""
    params = run.data.params
    model, seed = params.get("model/name_or_path", ""), params.get("seed", "")
    checkpoint = params.get("checkpoint", "None")
    if checkpoint in MISSING_PARAM:
        method = BASE
    elif parent is not None and is_training_run(parent):
        method, seed = method_name(parent.data.params, group_by), parent.data.params.get("seed", "")
    else:
        method = f"checkpoint {checkpoint}"
    if params.get("prompt/style") == "direct":
        method = f"{method} (direct)"
    found = []
    for key in filter(None, params.get("datasets", "").split(",")):
        dataset = dataset_label(key, params.get(f"{key}/data", key), params.get(f"{key}/split", "?"))
        found.append(_measurement(run, run.data.metrics, f"{key}/", model, method, dataset, seed, metrics))
    return [m for m in found if m is not None]


def _run_or_none(client: MlflowClient, run_id: str | None) -> Run | None:
    try:
        return client.get_run(run_id) if run_id else None
    except MlflowException:
        return None


def collect(client: MlflowClient, runs: list[Run], group_by: list[str], metrics: list[str]) -> list[Measurement]:
    """Every measurement of the selected training and evaluation runs (other runs are ignored)."""
    by_id = {run.info.run_id: run for run in runs}
    found: list[Measurement] = []
    for run in runs:
        if is_training_run(run):
            found += training_measurements(client, run, group_by, metrics)
        elif run.data.tags.get("kind") == "evaluation":
            parent_id = run.data.tags.get("mlflow.parentRunId")
            found += evaluation_measurements(run, by_id.get(parent_id) or _run_or_none(client, parent_id), group_by, metrics)
    return found


def trained_data(runs: Iterable[Run]) -> tuple[set[str], set[str]]:
    """The data names the training runs trained on, and their ``<data>/<ood_split>`` labels."""
    names, ood = set(), set()
    for run in filter(is_training_run, runs):
        params = run.data.params
        names.add(params.get("data/name", "?"))
        if params.get("data/ood_split", "None") not in MISSING_PARAM:
            ood.add(f"{params.get('data/name', '?')}/{params['data/ood_split']}")
    return names, ood


def distribution(dataset: str, in_distribution: Collection[str], out_of_distribution: Collection[str] = ()) -> str:
    """``OOD`` for a listed out-of-distribution ``name/split``; ``ID`` when ``dataset`` or its data name is in
    ``in_distribution``; else ``OOD``; ``""`` (unknown) when ``in_distribution`` is empty."""
    if not in_distribution:
        return ""
    if dataset in out_of_distribution:
        return "OOD"
    return "ID" if dataset in in_distribution or dataset.split("/")[0] in in_distribution else "OOD"


def method_order(method: str) -> tuple[int, str]:
    rank = 0 if method.startswith(BASE) else 1 if method.startswith("SFT") else 2 if method.startswith("RLVR") else 3
    return rank, method


def _seed_order(seed: str) -> tuple[bool, int, str]:
    """Numeric seeds in numeric order, then any others."""
    numeric = seed.lstrip("-").isdigit()
    return not numeric, int(seed) if numeric else 0, seed


def summarize(
    measurements: list[Measurement], classify: Callable[[str], str], metrics: list[str], confidence: float
) -> tuple[list[Cell], list[str]]:
    """Cells sorted by model, ID before OOD, dataset and method; and notes about runs dropped for a repeated seed."""
    groups: dict[tuple[str, str, str, int], dict[str, Measurement]] = defaultdict(dict)
    notes = []
    for m in sorted(measurements, key=lambda m: m.start_time):
        key = (m.model, m.method, m.dataset, m.questions)
        earlier = groups[key].get(m.seed)
        # every training run of a seed measures the same base model again: only different values are news
        if earlier is not None and (m.method != BASE or earlier.metrics != m.metrics):
            notes.append(
                f"{m.method} on {m.dataset} ({m.model}): runs {earlier.run_id} and {m.run_id} share "
                f"seed {m.seed}; kept the later one, {m.run_id}"
            )
        groups[key][m.seed] = m
    cells = []
    for (model, method, dataset, questions), by_seed in groups.items():
        kept = [by_seed[seed] for seed in sorted(by_seed, key=_seed_order)]
        values = {k: [m.metrics[k] for m in kept if k in m.metrics] for k in metrics}
        cells.append(
            Cell(
                model=model,
                method=method,
                distribution=classify(dataset),
                dataset=dataset,
                questions=questions,
                seeds=[m.seed for m in kept],
                run_ids=[m.run_id for m in kept],
                values=values,
                stats={k: t_interval(v, confidence) for k, v in values.items() if v},
            )
        )
    order = {"ID": 0, "OOD": 1, "": 2}
    cells.sort(key=lambda c: (c.model, order[c.distribution], c.dataset, c.questions, method_order(c.method)))
    return cells, notes


def _cell_text(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    if stat.ci_high is None:
        return f"{stat.mean:.3f} (n={stat.n})"
    return f"{stat.mean:.3f} ± {stat.half_width:.3f} (n={stat.n})"


def grid(cells: list[Cell], metric: str) -> tuple[list[str], list[tuple[str, str]], dict[tuple[int, int], Stat]]:
    """Dataset columns (in cell order), (model, method) rows (base, SFT, RLVR) and the ``metric``'s statistics
    by (row index, column index), for the table and the plot."""
    columns = list(dict.fromkeys(c.column for c in cells))
    rows = list(dict.fromkeys((c.model, c.method) for c in sorted(cells, key=lambda c: (c.model, method_order(c.method)))))
    stats_at = {
        (rows.index((c.model, c.method)), columns.index(c.column)): c.stats[metric] for c in cells if metric in c.stats
    }
    return columns, rows, stats_at


def markdown(cells: list[Cell], metrics: list[str], confidence: float) -> str:
    """One table per metric: rows (model, method), columns datasets; cells ``mean ± CI half-width (n=seeds)``."""
    parts = [f"Mean over seeds ± half-width of the {confidence:.0%} t-interval (n = seeds; no interval for one seed)."]
    for metric in metrics:
        columns, rows, stats_at = grid(cells, metric)
        lines = [f"## {metric}", "", "| model | method | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
        for i, (model, method) in enumerate(rows):
            texts = [_cell_text(stats_at.get((i, j))) for j in range(len(columns))]
            lines.append(f"| {model} | {method} | " + " | ".join(texts) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def records(cells: list[Cell], metrics: list[str]) -> list[dict[str, Any]]:
    """One flat record per cell: identity, seeds, and ``<metric>_{mean,std,ci_low,ci_high}``."""
    out = []
    for c in cells:
        record: dict[str, Any] = {
            "model": c.model, "method": c.method, "distribution": c.distribution, "dataset": c.dataset,
            "questions": c.questions, "seeds": len(c.seeds),
        }
        for metric in metrics:
            stat = c.stats.get(metric)
            for field in ("mean", "std", "ci_low", "ci_high"):
                record[f"{metric}_{field}"] = getattr(stat, field) if stat else None
        out.append(record)
    return out


def plot(cells: list[Cell], metrics: list[str], confidence: float, path: Path) -> Path:
    """Grouped bars, one panel per metric: datasets on the x axis, one bar per (model, method) labelled with its
    number of seeds, and the confidence interval as an error bar (none for a single seed)."""
    several_models = len({c.model for c in cells}) > 1
    fig = Figure(figsize=(max(5.0, 1.6 * len({c.column for c in cells}) * len(metrics) + 2), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        columns, rows, stats_at = grid(cells, metric)
        width = 0.8 / len(rows)
        for i, (model, method) in enumerate(rows):
            found = [(j, stats_at[i, j]) for j in range(len(columns)) if (i, j) in stats_at]
            xs = [j - 0.4 + width * (i + 0.5) for j, _ in found]
            errors = [stat.half_width if stat.n > 1 else math.nan for _, stat in found]  # no bar without an interval
            label = f"{method} ({model})" if several_models else method
            bars = ax.bar(xs, [stat.mean for _, stat in found], width, yerr=errors, capsize=3, label=label)
            ax.bar_label(bars, labels=[f"n={stat.n}" for _, stat in found], label_type="center", fontsize=7)
        ax.set_xticks(range(len(columns)), [c.replace(" [", "\n[").replace(" (", "\n(") for c in columns], fontsize=8)
        ax.set_ylabel(metric)
        if all(0 <= stat.mean <= 1 for stat in stats_at.values()):  # a rate: keep the whole 0-1 scale
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Mean over seeds with {confidence:.0%} t-intervals", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def write_outputs(cells: list[Cell], notes: list[str], cfg: CompareConfig, out_dir: Path) -> tuple[str, list[Path]]:
    """Write ``compare.{md,csv,json,png}`` to ``out_dir``; return the Markdown text and the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(cells, cfg.metrics, cfg.confidence)
    if notes:
        text += "\nNotes:\n" + "".join(f"- {note}\n" for note in notes)
    (out_dir / "compare.md").write_text(text)
    rows = records(cells, cfg.metrics)
    with open(out_dir / "compare.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = {
        "tracking_uri": cfg.tracking_uri or default_tracking_uri(), "experiments": cfg.experiments,
        "run_ids": cfg.run_ids, "confidence": cfg.confidence, "notes": notes,
        "cells": [
            {**record, "seed_list": c.seeds, "run_ids": c.run_ids, "values": c.values} for record, c in zip(rows, cells)
        ],
    }
    (out_dir / "compare.json").write_text(json.dumps(report, indent=2))
    paths = [out_dir / name for name in ("compare.md", "compare.csv", "compare.json")]
    return text, [*paths, plot(cells, cfg.metrics, cfg.confidence, out_dir / "compare.png")]


def run(cfg: CompareConfig, out_dir: Path) -> list[Cell]:
    """Select the runs, build the table, print it and write the files."""
    uri = cfg.tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiments = list(cfg.experiments or [])
    runs, notes = select_runs(client, experiments, list(cfg.run_ids))
    measurements = collect(client, runs, list(cfg.group_by), list(cfg.metrics))
    if not measurements:
        raise CompareError(
            f"no finished training or evaluation run with evaluation metrics in experiment(s) {experiments} "
            f"or run id(s) {list(cfg.run_ids)} at {uri}"
        )
    missing = [key for key in cfg.metrics if not any(key in m.metrics for m in measurements)]
    if missing:
        raise CompareError(
            f"metrics: {missing} found in none of the selected evaluations (evaluation metrics: accuracy, "
            "format_rate, majority_accuracy, position_bias_tv, reasoning_words, response_tokens, truncated_rate, ...)"
        )
    if cfg.in_distribution is None:
        names, ood = trained_data(runs)
        classify = functools.partial(distribution, in_distribution=names, out_of_distribution=ood)
    else:
        classify = functools.partial(distribution, in_distribution=list(cfg.in_distribution))
    cells, seed_notes = summarize(measurements, classify, list(cfg.metrics), cfg.confidence)
    text, paths = write_outputs(cells, notes + seed_notes, cfg, out_dir)
    comparison = log_comparison(client, experiments, runs, paths)
    print(text)
    print("\n".join(f"wrote {path}" for path in paths))
    print(f"logged to run {comparison} under compare/")
    return cells


def log_comparison(client: MlflowClient, experiments: list[str], runs: list[Run], paths: list[Path]) -> str:
    """A run named ``compare`` (tag ``kind=compare``; ignored by later comparisons) holding ``paths`` under
    ``compare/``, in the first of ``experiments`` (else the first compared run's), tagged with the compared
    run ids; returns its id."""
    found = client.get_experiment_by_name(experiments[0]) if experiments else None
    experiment_id = found.experiment_id if found else runs[0].info.experiment_id
    ids = ",".join(sorted(run.info.run_id for run in runs))
    run_id = client.create_run(experiment_id, run_name="compare", tags={"kind": "compare", "compared_runs": ids[:5000]}).info.run_id
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path="compare")
    client.set_terminated(run_id)
    return run_id


@hydra.main(config_path=str(config_dir()), config_name="compare", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with a one-line error and exit code 2."""
    try:
        cfg: CompareConfig = OmegaConf.to_object(dict_cfg)  # type: ignore[assignment]
        run(cfg, Path(cfg.output_dir or HydraConfig.get().runtime.output_dir).resolve())
    except (CompareError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
