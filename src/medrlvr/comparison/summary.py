"""The comparison's statistics and outputs: measurements grouped into cells (one value per seed, mean and
t-interval), the Markdown tables, the flat records, the bar plot and the files written."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from scipy import stats

from medrlvr.comparison.measurements import BASE, Measurement
from medrlvr.config import CompareConfig
from medrlvr.paths import default_tracking_uri


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
        """Half the confidence interval's width (0 without an interval)."""
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


def method_order(method: str) -> tuple[int, str]:
    """Sort key of a method: base, then SFT, then RLVR, then any other."""
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
