"""The runs a comparison reads and what they measured: the finished training and evaluation runs selected
in MLflow, one :class:`Measurement` per model, method and dataset, and whether a dataset is in distribution."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

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
    """Whether ``run`` is a training run (it has the ``algo/name`` param)."""
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
