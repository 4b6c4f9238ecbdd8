"""Plots (matplotlib, Agg backend) and Markdown reports of reasoning stages."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medrlvr.analysis.classifier import FLAGS, Stage  # noqa: E402
from medrlvr.analysis.dynamics import StageSighting, seen_in_study_order  # noqa: E402

STAGE_COLORS = {
    Stage.FORMAT_FAILURE: "#9e9e9e",
    Stage.VERBOSE_FORMATTER: "#4c72b0",
    Stage.CONCISE_STRUCTURER: "#55a868",
    Stage.DIRECT_ANSWER_HACKER: "#c44e52",
    Stage.STEP_BY_STEP_EXPLOIT: "#dd8452",
    Stage.REINTEGRATED_REASONING: "#8172b3",
}
Series = tuple[Sequence[int], Sequence[float]]
BOUNDARY_RULE = (
    "The dominant stage of an iteration is its most frequent stage (ties go to the lower number). The run "
    "starts in the dominant stage of its first iteration; a boundary is the first iteration of a streak of at "
    "least {k} consecutive iterations dominated by another stage. Shorter streaks do not move the phase."
)


def _mark_boundaries(ax: plt.Axes, boundaries: Sequence[tuple[int, Stage]], label: bool) -> None:
    for iteration, stage in boundaries:
        ax.axvline(iteration, color=STAGE_COLORS[stage], linestyle="--", linewidth=1.2)
        if label:
            ax.annotate(
                str(stage.value), (iteration, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", color=STAGE_COLORS[stage], fontweight="bold",
            )


def stage_fractions_figure(
    iterations: Sequence[int], fractions: Mapping[Stage, Sequence[float]], boundaries: Sequence[tuple[int, Stage]]
) -> plt.Figure:
    """Stacked area of the six stage fractions over iterations, boundaries as dashed lines."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.stackplot(
        iterations, *[fractions[s] for s in Stage], labels=[s.title for s in Stage], colors=[STAGE_COLORS[s] for s in Stage]
    )
    _mark_boundaries(ax, boundaries, label=True)
    ax.set(xlabel="PPO iteration", ylabel="share of completions", ylim=(0, 1), xlim=(min(iterations), max(iterations)))
    ax.set_title("Reasoning stages over training")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    return _tight(fig)


def plot_stage_fractions(
    iterations: Sequence[int], fractions: Mapping[Stage, Sequence[float]], boundaries: Sequence[tuple[int, Stage]], path: Path
) -> Path:
    """:func:`stage_fractions_figure` saved as ``path``."""
    return _save(stage_fractions_figure(iterations, fractions, boundaries), path)


def training_curves_figure(
    panels: Mapping[str, Mapping[str, Series]], boundaries: Sequence[tuple[int, Stage]]
) -> plt.Figure:
    """One panel per entry of ``panels`` (title → {curve label → (steps, values)}), boundaries marked in each."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, curves) in zip(axes[:, 0], panels.items()):
        for label, (steps, values) in curves.items():
            if len(steps):
                ax.plot(steps, values, marker="o", markersize=3, label=label)
        _mark_boundaries(ax, boundaries, label=False)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    axes[-1, 0].set_xlabel("PPO iteration")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return _tight(fig)


def plot_training_curves(
    panels: Mapping[str, Mapping[str, Series]], boundaries: Sequence[tuple[int, Stage]], path: Path
) -> Path:
    """:func:`training_curves_figure` saved as ``path``."""
    return _save(training_curves_figure(panels, boundaries), path)


def letter_distribution_figure(chosen: Mapping[str, Mapping[str, float]], true: Mapping[str, float]) -> plt.Figure:
    """Grouped bars of the share of completions answering each letter (``"none"``: no letter parsed), one group
    member per set of ``chosen`` (label → letter → share, e.g. before and after training), the answer key's
    shares ``true`` (letter → share) as black outlines."""
    letters = list(true) + ["none"]
    width = 0.8 / max(len(chosen), 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for n, (label, shares) in enumerate(chosen.items()):
        xs = [i + (n - (len(chosen) - 1) / 2) * width for i in range(len(letters))]
        ax.bar(xs, [shares.get(x, 0.0) for x in letters], width=width, label=label)
    ax.bar(range(len(true)), list(true.values()), width=0.9, fill=False, edgecolor="black", label="answer key")
    ax.set_xticks(range(len(letters)), letters)
    ax.set(ylabel="share of completions", ylim=(0, 1), title="Answer letters")
    ax.legend(fontsize=8)
    return _tight(fig)


def plot_stage_bars(fractions: Mapping[Stage, float], flag_rates: Mapping[str, float], path: Path) -> Path:
    """Bar charts of the stage shares and the flag rates of one set of completions."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([s.title for s in Stage], [fractions[s] for s in Stage], color=[STAGE_COLORS[s] for s in Stage])
    left.invert_yaxis()
    left.set(xlim=(0, 1), xlabel="share of completions", title="Stages")
    right.barh(list(flag_rates), list(flag_rates.values()), color="#607d8b")
    right.invert_yaxis()
    right.set(xlim=(0, 1), xlabel="share of completions", title="Flags")
    return _save(fig, path)


def _tight(fig: plt.Figure) -> plt.Figure:
    fig.tight_layout()
    return fig


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def fenced(text: str) -> str:
    """``text`` in a Markdown code block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats are printed with three decimals."""
    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def examples_section(rows_by_stage: Mapping[Stage, Sequence[Mapping]]) -> str:
    """One subsection per stage with its example completions (rows as logged by the analysis callback)."""
    parts = ["## Example completions"]
    for stage in Stage:
        parts.append(f"### {stage.title}")
        rows = rows_by_stage.get(stage, [])
        if not rows:
            parts.append("No example of this stage.")
        for row in rows:
            where = f"iteration {row['iteration']}, " if row.get("iteration") is not None else ""
            flags = row.get("flags") or "none"
            parts.append(
                f"{where}question `{row.get('id')}`: answered {row.get('letter') or '-'} "
                f"(correct {row.get('answer') or '?'}), {row.get('reasoning_words')} reasoning words, flags: {flags}\n\n"
                + fenced(str(row["response"]))
            )
    return "\n\n".join(parts)


def seen_section(sightings: Sequence[StageSighting], seen_fraction: float) -> str:
    """Which stages the run showed, when first, at what peak share, and whether in the study's order."""
    seen = sorted((s for s in sightings if s.first_seen is not None), key=lambda s: (s.first_seen, s.stage))
    order = " → ".join(str(int(s.stage)) for s in seen) or "none"
    verdict = "yes" if seen_in_study_order(sightings) else "no"
    summary = (
        f"A stage is seen from the first iteration in which it holds at least {seen_fraction:.0%} of the "
        f"completions. Seen: {len(seen)} of 6 stages, in the order {order}; in the study's order "
        f"(stage numbers rising, ties allowed): {verdict}."
    )
    rows = [
        (s.stage.title, "-" if s.first_seen is None else s.first_seen, s.peak_share, s.peak_iteration)
        for s in sightings
    ]
    return summary + "\n\n" + table(["stage", "first seen at iteration", "peak share", "at iteration"], rows)


def flag_legend() -> str:
    """What each flag means, for the reports."""
    meaning = {
        "format_failure": "the strict parser rejects the completion",
        "short_reasoning": "the think block holds no reasoning, or is drastically short for this run",
        "answer_in_reasoning": "the think block states the answer (letter or option text) before reasoning towards it",
        "reasoning_before_think": "reasoning text stands before the final <think>",
        "contradiction": "the letter the reasoning concludes differs from the answered letter",
        "verbose": "the think block is long, both in words and for this run",
        "copies_example": "the response repeats a passage of the prompt's worked example",
        "self_verification": "a self-verification phrase (wait, let me double-check, re-evaluate...): the 'aha' signal",
    }
    return "\n".join(f"- `{name}`: {meaning[name]}" for name in FLAGS)
