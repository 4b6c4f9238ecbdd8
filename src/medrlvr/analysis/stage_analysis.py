"""Reasoning-stage analysis of a training run or of a file of completions, as ``python -m medrlvr.analyze``
runs it.

For an MLflow run (trained with the stage-analysis callback) it reads the ``stage/*``, ``flag/*``, ``length/*``
and ``reward/*`` metric histories and the ``stages/`` example tables, and writes into the output folder:
``stage_fractions.png`` (stacked area), ``training_curves.png`` (reward / accuracy / length / flag curves with
stage boundaries) and ``report.md`` (phases, the stages seen and when, first/last fractions, flags, examples of
each stage); these are also logged to the run under ``analysis/``.

For a ``.json`` (MLflow table such as ``eval/bundled_validation.json``, or a list of objects) or ``.jsonl`` file of
completions with a ``response`` field (and optionally ``letters``, ``iteration``, ``id``, ``answer``) it
classifies every completion and writes ``stage_fractions.png`` (bar charts), ``classified.jsonl`` and
``report.md``. Thresholds: ``analysis/*`` params of the run when present, else the defaults of
:class:`medrlvr.config.AnalysisConfig`; ``--set key=value`` overrides either. ``--format study`` reads a file's
completions as a run trained with ``reward.format=study`` did (text before ``<think>`` is not a format failure).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from itertools import groupby
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from medrlvr.analysis.classifier import FLAGS, CompletionAnalysis, Stage
from medrlvr.analysis.dynamics import (
    StageTracker,
    classified_row,
    dominant_stage,
    example_rows,
    flag_shares,
    format_kind_shares,
    iteration_metrics,
    stage_fractions,
    stage_phases,
    stage_sightings,
)
from medrlvr.analysis.io import load_completions, read_rows
from medrlvr.analysis.stage_report import (
    BOUNDARY_RULE,
    Series,
    examples_section,
    flag_legend,
    plot_stage_bars,
    plot_stage_fractions,
    plot_training_curves,
    seen_section,
    table,
)
from medrlvr.config import AnalysisConfig, ConfigError
from medrlvr.paths import default_tracking_uri
from medrlvr.rewards.parsing import ParseRules


def config_from(params: Mapping[str, str], overrides: Sequence[str]) -> AnalysisConfig:
    """Analysis thresholds from a run's ``analysis/<key>`` params, then ``key=value`` overrides."""
    fields = {f.name: type(getattr(AnalysisConfig(), f.name)) for f in dataclasses.fields(AnalysisConfig)}
    values: dict[str, object] = {}
    for key, raw in [(k.removeprefix("analysis/"), v) for k, v in params.items() if k.startswith("analysis/")]:
        if key in fields:
            values[key] = fields[key](raw)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--set {item!r}: expected key=value with key among {', '.join(fields)}")
        try:
            values[key] = fields[key](raw)
        except ValueError as err:
            raise ConfigError(f"--set {item!r}: {key} must be {fields[key].__name__}") from err
    return AnalysisConfig(**values)  # type: ignore[arg-type]


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


def _flag_history(client: MlflowClient, run_id: str, name: str) -> dict[int, float]:
    """A flag's shares by iteration; ``format_failure`` is read as 1 − ``reward/format_rate``."""
    if name == "format_failure":
        return {step: 1.0 - value for step, value in _history(client, run_id, "reward/format_rate").items()}
    return _history(client, run_id, f"flag/{name}")


def _series(history: Mapping[int, float]) -> Series:
    steps = sorted(history)
    return steps, [history[s] for s in steps]


def _stage_tables(client: MlflowClient, run_id: str, tracking_uri: str) -> list[dict]:
    """All rows of the run's ``stages/iteration_*.json`` example tables."""
    if not client.list_artifacts(run_id, "stages"):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="stages", tracking_uri=tracking_uri, dst_path=tmp))
        return [row for path in sorted(folder.glob("*.json")) for row in read_rows(path)]


def _pick_examples(rows: Sequence[Mapping], share: Mapping[int, Mapping[Stage, float]], per_stage: int) -> dict[Stage, list]:
    """Per stage, distinct examples from the iterations where that stage was most frequent (then the latest)."""
    picked: dict[Stage, list] = {}
    for stage in Stage:
        candidates = list({r["response"]: r for r in rows if r.get("stage") == int(stage)}.values())
        candidates.sort(key=lambda r: (-share.get(r.get("iteration"), {}).get(stage, 0.0), -(r.get("iteration") or 0)))
        picked[stage] = candidates[:per_stage]
    return picked


def analyze_run(run_id: str, tracking_uri: str, output: Path, overrides: Sequence[str], log_artifacts: bool = True) -> Path:
    """Plots and report of a finished training run; returns the report's path."""
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    cfg = config_from(run.data.params, overrides)
    histories = {stage: _history(client, run_id, f"stage/{stage.slug}") for stage in Stage}
    iterations = sorted({step for history in histories.values() for step in history})
    if not iterations:
        raise ValueError(f"run {run_id} has no stage/* metrics: it was trained without the stage-analysis callback")
    fractions = {stage: [histories[stage].get(i, 0.0) for i in iterations] for stage in Stage}
    share = {i: {stage: fractions[stage][n] for stage in Stage} for n, i in enumerate(iterations)}
    phases = stage_phases(iterations, [dominant_stage(share[i]) for i in iterations], cfg.boundary_min_iterations)
    boundaries = phases[1:]

    output.mkdir(parents=True, exist_ok=True)
    plot_stage_fractions(iterations, fractions, boundaries, output / "stage_fractions.png")
    flags = {name: _flag_history(client, run_id, name) for name in FLAGS}
    plot_training_curves(
        {
            "Reward and accuracy": {
                label: _series(_history(client, run_id, f"reward/{key}"))
                for label, key in (("reward", "mean"), ("accuracy", "accuracy"), ("format rate", "format_rate"))
            },
            "Length (words)": {
                f"{part} {stat}": _series(_history(client, run_id, f"length/{part}_words_{stat}"))
                for part in ("response", "reasoning")
                for stat in ("mean", "p90")
            },
            "Flags (share of completions)": {name: _series(history) for name, history in flags.items()},
        },
        boundaries,
        output / "training_curves.png",
    )

    first, last = iterations[0], iterations[-1]
    flag_rows = []
    for name, history in flags.items():
        peak = max(history, key=lambda step: (history[step], -step)) if history else None
        flag_rows.append((f"`{name}`", history.get(first, 0.0), history.get(last, 0.0), history.get(peak, 0.0), peak))
    examples = _pick_examples(_stage_tables(client, run_id, tracking_uri), share, cfg.examples_per_stage)
    aha = flags["self_verification"]
    report = "\n\n".join(
        [
            f"# Reasoning stages of run `{run.info.run_name}` ({run_id})",
            f"{len(iterations)} PPO iterations ({first} to {last}).",
            "![Stage fractions](stage_fractions.png)",
            "![Training curves](training_curves.png)",
            "## Phases",
            BOUNDARY_RULE.format(k=cfg.boundary_min_iterations),
            table(["from iteration", "dominant stage"], [(i, s.title) for i, s in phases]),
            "## Stages seen",
            seen_section(stage_sightings(iterations, fractions, cfg.seen_fraction), cfg.seen_fraction),
            "## Stage fractions at the first and last iteration",
            table(["stage", f"iteration {first}", f"iteration {last}"], [(s.title, share[first][s], share[last][s]) for s in Stage]),
            "## Flags (share of completions)",
            flag_legend(),
            table(["flag", f"iteration {first}", f"iteration {last}", "max", "at iteration"], flag_rows),
            "## Self-verification (\"aha\")",
            f"Completions with a self-verification phrase: at most {max(aha.values(), default=0.0):.3f} of an "
            "iteration. The study observed no aha moment.",
            examples_section(examples),
        ]
    )
    path = output / "report.md"
    path.write_text(report + "\n", encoding="utf-8")
    if log_artifacts:
        client.log_artifacts(run_id, str(output), artifact_path="analysis")
    return path


def analyze_file(
    path: Path, output: Path, overrides: Sequence[str], letters: str, rules: ParseRules = ParseRules()
) -> Path:
    """Classify a file of completions, read with the training reward's ``rules``; rows with an ``iteration`` are
    classified in iteration order."""
    cfg = config_from({}, overrides)
    rows = load_completions(path, letters)
    tracker = StageTracker(cfg)

    def iteration_of(index: int) -> int:
        value = rows[index].get("iteration")
        return value if isinstance(value, int) else 0

    by_index: dict[int, CompletionAnalysis] = {}
    for iteration, group in groupby(sorted(range(len(rows)), key=iteration_of), key=iteration_of):
        indices = list(group)
        pairs = [(rows[i]["response"], rows[i]["letters"]) for i in indices]
        options = [rows[i].get("options") for i in indices]
        by_index.update(zip(indices, tracker.classify_iteration(iteration, pairs, rules, options)))
    done = [by_index[i] for i in range(len(rows))]
    metrics = iteration_metrics(done)
    flags = flag_shares(done)
    fractions = stage_fractions(done)

    output.mkdir(parents=True, exist_ok=True)
    plot_stage_bars(fractions, flags, output / "stage_fractions.png")
    with (output / "classified.jsonl").open("w", encoding="utf-8") as out:
        for row, analysis in zip(rows, done):
            out.write(json.dumps(classified_row(row, analysis)) + "\n")
    examples = example_rows(rows, done, cfg.examples_per_stage)
    report = "\n\n".join(
        [
            f"# Reasoning stages of `{path.name}`",
            f"{len(rows)} completions from `{path}`; every completion with its stage and flags is in `classified.jsonl`.",
            "![Stage and flag shares](stage_fractions.png)",
            "## Stages",
            table(["stage", "completions", "share"], [(s.title, sum(a.stage == s for a in done), fractions[s]) for s in Stage]),
            "## Flags (share of completions)",
            flag_legend(),
            table(["flag", "share"], [(f"`{name}`", share) for name, share in flags.items()]),
            "## Format failure kinds",
            table(["kind", "share"], list(format_kind_shares(done).items())),
            "## Lengths (words)",
            table(
                ["", "mean", "p50", "p90"],
                [(part, *(metrics[f"length/{part}_words_{s}"] for s in ("mean", "p50", "p90"))) for part in ("response", "reasoning")],
            ),
            examples_section({s: [r for r in examples if r["stage"] == int(s)] for s in Stage}),
        ]
    )
    report_path = output / "report.md"
    report_path.write_text(report + "\n", encoding="utf-8")
    return report_path


def analyze_target(
    target: str, output: Path | None, overrides: Sequence[str], letters: str, rules: ParseRules,
    tracking_uri: str | None = None, log_artifacts: bool = True,
) -> Path:
    """Analyze ``target``, a file of completions (:func:`analyze_file`) or else a run id in ``tracking_uri``
    (:func:`analyze_run`), into ``output`` (default ``analysis/<file stem or run id>``); returns the report's
    path. A target that is neither raises ``ValueError``."""
    path = Path(target)
    if path.suffix in (".json", ".jsonl") or path.exists():
        return analyze_file(path, output or Path("analysis") / path.stem, overrides, letters, rules)
    uri = tracking_uri or default_tracking_uri()
    try:
        return analyze_run(target, uri, output or Path("analysis") / target, overrides, log_artifacts)
    except MlflowException as err:
        raise ValueError(f"{target!r} is neither a file nor a run in {uri}: {err.message}") from err
