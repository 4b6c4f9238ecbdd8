"""The report comparing the trials of a sweep, written at the end of the sweep and by ``python -m medrlvr.report``.

Prints the trials sorted by objective (swept parameters, objective, key metrics), writes the table as
``trials.csv`` and ``trials.md`` and, apart from it, the best trial's test numbers (``best_trial_test.md``: its
evaluations on other sets than ``data.eval_split``, e.g. ``eval/bundled_ood/*``, which no trial is chosen by),
plots the objective against each swept parameter, the training curves of the best trials and, for Optuna
sweeps, the parameter importances (PNG), and logs all of it to the sweep's parent run under ``report/``.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from medrlvr.config import ConfigError
from medrlvr.data.compose import set_name
from medrlvr.sweeping import tags as T
from medrlvr.sweeping.objective import held_out

# metrics at a trial's last step; {validation} is its data.eval_split's evaluation set
KEY_METRICS = (
    "eval/{validation}/accuracy",
    "eval/{validation}/format_rate",
    "reward/mean",
    "kl/mean_per_sequence",
    "response/tokens_mean",
)
TEST_METRIC_NAMES = ("accuracy", "format_rate")
CURVE_METRICS = ("reward/mean", "reward/accuracy", "reward/format_rate", "kl/mean_per_sequence")


@dataclass(frozen=True)
class Trial:
    """One trial run: its swept parameter values (from its overrides), objective (None if failed) and metrics."""

    number: int | None
    run_id: str
    status: str
    params: dict[str, str]
    objective: float | None
    metrics: dict[str, float]
    test_metrics: dict[str, float]
    minutes: float | None
    error: str


@dataclass(frozen=True)
class Sweep:
    """A sweep's parent run and its trials, best first (failed trials last)."""

    parent_run_id: str
    experiment_name: str
    name: str
    kind: str
    objective: str
    direction: str
    params: list[str]
    trials: list[Trial]
    tags: dict[str, str]

    @property
    def completed(self) -> list[Trial]:
        return [trial for trial in self.trials if trial.objective is not None]

    @property
    def all_equal(self) -> bool:
        """Whether every completed trial has the same objective (then nothing can be told apart)."""
        return len(self.completed) > 1 and len({trial.objective for trial in self.completed}) == 1

    @property
    def objective_label(self) -> str:
        return "objective (return value)" if self.objective == T.RETURN_VALUE else self.objective


def find_parent_run(client: MlflowClient, experiment_name: str) -> str:
    """The latest sweep parent run of an experiment; a clear error when there is none."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no MLflow experiment {experiment_name!r} in {client.tracking_uri}; experiments: {names}")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.{T.ROLE} = 'parent'", order_by=["attributes.start_time DESC"]
    )
    if not runs:
        raise ConfigError(f"experiment {experiment_name!r} holds no sweep (no run tagged {T.ROLE}=parent)")
    return runs[0].info.run_id


def load_sweep(client: MlflowClient, parent_run_id: str) -> Sweep:
    """Read a sweep's parent run and trial runs from MLflow."""
    parent = client.get_run(parent_run_id)
    tags = parent.data.tags
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{T.PARENT}` = '{parent_run_id}'", max_results=10000
    )
    direction = tags.get(T.DIRECTION, "maximize")
    trials = sorted((_trial(run) for run in runs), key=lambda t: _rank(t, direction))
    return Sweep(
        parent_run_id=parent_run_id,
        experiment_name=client.get_experiment(parent.info.experiment_id).name,
        name=tags.get(T.SWEEP, parent.info.run_name or ""),
        kind=tags.get(T.KIND, ""),
        objective=tags.get(T.OBJECTIVE, T.RETURN_VALUE),
        direction=direction,
        params=tags.get(T.PARAMS, "").split(),
        trials=trials,
        tags=tags,
    )


def _trial(run: Run) -> Trial:
    tags, metrics = run.data.tags, run.data.metrics
    end = run.info.end_time
    validation = set_name(run.data.params.get("data/name", "?"), run.data.params.get("data/eval_split", "?"))
    keys = [key.format(validation=validation) for key in KEY_METRICS]
    return Trial(
        number=int(tags[T.TRIAL]) if tags.get(T.TRIAL, "").isdigit() else None,
        run_id=run.info.run_id,
        status=run.info.status,
        params=T.parse_overrides(tags.get(T.OVERRIDES, "")),
        objective=metrics.get(T.OBJECTIVE_METRIC),
        metrics={key: metrics[key] for key in keys if key in metrics},
        test_metrics=held_out_metrics(metrics, validation),
        minutes=(end - run.info.start_time) / 60000 if end and run.info.start_time else None,
        error=tags.get(T.ERROR, ""),
    )


def held_out_metrics(metrics: dict[str, float], validation_set: str) -> dict[str, float]:
    """Accuracy and format rate of a run's evaluations on other sets than ``validation_set`` (test sets) at its
    last step, sorted by name."""
    return {
        key: value
        for key, value in sorted(metrics.items())
        if held_out(key, validation_set) and key.rsplit("/", 1)[-1] in TEST_METRIC_NAMES
    }


def _rank(trial: Trial, direction: str) -> tuple:
    if trial.objective is None:
        return (1, 0.0, trial.number or 0)
    return (0, -trial.objective if direction == "maximize" else trial.objective, trial.number or 0)


def table(sweep: Sweep) -> tuple[list[str], list[list[str]]]:
    """Header and rows (best first): trial, status, swept parameters, objective, key metrics, minutes, run, error."""
    metrics = list(dict.fromkeys(key for trial in sweep.trials for key in trial.metrics))
    header = ["trial", "status", *sweep.params, sweep.objective_label, *metrics, "minutes", "run_id", "error"]
    rows = [
        [
            "" if trial.number is None else str(trial.number),
            trial.status,
            *[trial.params.get(key, "") for key in sweep.params],
            _fmt(trial.objective),
            *[_fmt(trial.metrics.get(key)) for key in metrics],
            _fmt(trial.minutes),
            trial.run_id,
            trial.error,
        ]
        for trial in sweep.trials
    ]
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (numbers to 4 significant digits, run ids shortened, errors cut to 80 characters)."""
    short = [[*map(_short, row[:-2]), row[-2][:8], row[-1][:80].replace("|", "/")] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in short]) + "\n"


def best_trial_test(sweep: Sweep) -> str:
    """Markdown: the best trial (by the objective, on data.eval_split) and its test numbers, kept apart from the
    table the trials were compared by."""
    if not sweep.completed:
        return "No completed trial.\n"
    best = sweep.completed[0]
    params = "".join(f"; {key}={best.params[key]}" for key in sweep.params if key in best.params)
    heading = f"Best trial #{best.number} (run {best.run_id}): {sweep.objective_label} {_fmt(best.objective)}"
    if not best.test_metrics:
        advice = "train with trainer.eval_ood=true, or run python -m medrlvr.evaluate on its policy"
        return f"{heading}{params}\n\nIts run has no test-set metrics ({advice}).\n"
    rows = [f"| {key} | {_fmt(value)} |" for key, value in best.test_metrics.items()]
    return "\n".join([f"{heading}{params}", "", "| test metric | value |", "|---|---|", *rows]) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _short(cell: str) -> str:
    number = _number(cell)
    return cell if number is None or len(cell) <= 8 else _fmt(number)


def log_summary(client: MlflowClient, sweep: Sweep) -> None:
    """Trial counts and the best trial on the parent run (metrics ``trials_*``, ``best_objective``, the best
    trial's test numbers as ``best_trial/<metric>``; ``best_*`` tags)."""
    client.log_metric(sweep.parent_run_id, "trials_completed", len(sweep.completed))
    client.log_metric(sweep.parent_run_id, "trials_failed", len(sweep.trials) - len(sweep.completed))
    if sweep.completed:
        best = sweep.completed[0]
        client.log_metric(sweep.parent_run_id, "best_objective", best.objective)
        for key, value in best.test_metrics.items():
            client.log_metric(sweep.parent_run_id, f"best_trial/{key}", value)
        client.set_tag(sweep.parent_run_id, "best_trial", str(best.number))
        client.set_tag(sweep.parent_run_id, "best_run_id", best.run_id)
        client.set_tag(sweep.parent_run_id, "best_params", " ".join(f"{k}={best.params.get(k)}" for k in sweep.params))


def plot_objective(sweep: Sweep, out_dir: Path) -> list[Path]:
    """One PNG per swept parameter: objective of each completed trial against the parameter's value."""
    paths = []
    for key in sweep.params:
        points = [(trial.params[key], trial.objective) for trial in sweep.completed if key in trial.params]
        if not points:
            continue
        fig = Figure(figsize=(5.5, 4), layout="constrained")
        ax = fig.subplots()
        numeric = [_number(x) for x, _ in points]
        if all(x is not None for x in numeric):
            ax.scatter(numeric, [y for _, y in points], s=40)
            _scale(ax, [x for x in numeric if x is not None])
        else:
            labels = list(dict.fromkeys(x for x, _ in points))
            ax.scatter([labels.index(x) for x, _ in points], [y for _, y in points], s=40)
            ax.set_xticks(range(len(labels)), labels, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xlabel(key)
        ax.set_ylabel(sweep.objective_label)
        same = f"; all score {sweep.completed[0].objective:g}" if sweep.all_equal else ""
        ax.set_title(f"{sweep.name}: {len(points)} completed trials{same}", fontsize=10)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out_dir / f"objective_vs_{_slug(key)}.png"))
    return paths


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _scale(ax, values: list[float]) -> None:
    """Log x axis for positive values spanning a decade or more; symlog when zero is among them."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) / min(positive) < 10 or min(values) < 0:
        return
    if len(positive) == len(values):
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive))


def plot_curves(client: MlflowClient, sweep: Sweep, out_dir: Path, top: int = 3) -> Path | None:
    """Training curves (per PPO iteration) of the ``top`` best trials, one panel per metric."""
    best = sweep.completed[:top]
    histories = {
        trial.run_id: {key: client.get_metric_history(trial.run_id, key) for key in CURVE_METRICS} for trial in best
    }
    keys = [key for key in CURVE_METRICS if any(histories[t.run_id][key] for t in best)]
    if not keys:
        return None
    columns = min(2, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(5.5 * columns, 3.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys):
        for trial in best:
            points = sorted((m.step, m.value) for m in histories[trial.run_id][key])
            label = f"#{trial.number} " + " ".join(f"{k}={trial.params.get(k)}" for k in sweep.params)
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label[:60])
        ax.set_title(key)
        ax.set_xlabel("PPO iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{sweep.name}: the {len(best)} best trials by {sweep.objective_label}")
    return _save(fig, out_dir / "best_trials_curves.png")


def plot_importances(sweep: Sweep, out_dir: Path, storage: str | None = None) -> Path | None:
    """Optuna's parameter importances of the sweep's study (Optuna sweeps with two or more completed trials)."""
    import optuna

    if sweep.kind != "optuna" or len(sweep.completed) < 2:
        return None
    if sweep.all_equal:
        print(f"every completed trial scored {sweep.completed[0].objective:g}: no parameter importances to plot")
        return None
    study = optuna.load_study(study_name=sweep.tags[T.STUDY], storage=storage or sweep.tags[T.STORAGE])
    importances = optuna.importance.get_param_importances(study)
    names = list(importances)[::-1]
    fig = Figure(figsize=(6.5, 0.5 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[name] for name in names])
    ax.set_xlabel(f"importance for {sweep.objective_label}")
    ax.set_title(f"{sweep.name}: Optuna parameter importances ({len(sweep.completed)} trials)", fontsize=10)
    return _save(fig, out_dir / "param_importances.png")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def default_report_dir(experiment: str) -> Path:
    """``reports/<experiment>``, with the characters a folder name should not hold replaced by ``_``."""
    return Path("reports") / _slug(experiment)


def write_report(
    client: MlflowClient, sweep: Sweep, out_dir: Path, top: int = 3, storage: str | None = None
) -> tuple[str, list[Path]]:
    """Write table and plots to ``out_dir``, log them to the parent run; returns the Markdown table and the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = table(sweep)
    with open(out_dir / "trials.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    text = markdown(header, rows)
    (out_dir / "trials.md").write_text(f"# Sweep {sweep.name} ({sweep.experiment_name})\n\n{text}")
    title = f"# Test numbers of the best trial of sweep {sweep.name} (not used to choose it)"
    (out_dir / "best_trial_test.md").write_text(f"{title}\n\n{best_trial_test(sweep)}")
    paths = [out_dir / "trials.csv", out_dir / "trials.md", out_dir / "best_trial_test.md"]
    paths += plot_objective(sweep, out_dir)
    paths += [p for p in (plot_curves(client, sweep, out_dir, top), plot_importances(sweep, out_dir, storage)) if p]
    client.log_artifacts(sweep.parent_run_id, str(out_dir), artifact_path="report")
    return text, paths


def report_sweep(client: MlflowClient, sweep: Sweep, out_dir: Path, top: int = 3, storage: str | None = None) -> None:
    """Log the summary to the parent run, write and log the report (:func:`write_report`) and print it."""
    log_summary(client, sweep)
    text, paths = write_report(client, sweep, out_dir, top, storage)
    print(
        f"Sweep {sweep.name!r} ({sweep.kind}): {len(sweep.completed)} of {len(sweep.trials)} trials completed, "
        f"{sweep.direction} {sweep.objective_label}\n"
    )
    print(text)
    print(f"Test numbers of the best trial (not used to choose it):\n\n{best_trial_test(sweep)}")
    print("\n".join(f"wrote {path}" for path in paths))
    print(f"logged to run {sweep.parent_run_id} under report/")
