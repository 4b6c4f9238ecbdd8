"""The memory plan as a Markdown table or a JSON document."""

from __future__ import annotations

import dataclasses
from typing import Any

from medrlvr.plan.memory import GIB, Plan


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _columns(plan: Plan) -> list[tuple[str, dict[str, int], int]]:
    """``(heading, bytes by item, total)`` per phase and GPU size; a phase that is the same on every GPU size
    gets one column."""
    columns: list[tuple[str, dict[str, int], int]] = []
    for index, gpu in enumerate(plan.gpus):
        for phase in gpu.phases:
            values = {item.name: item.bytes for item in phase.items}
            if any(heading.startswith(phase.name) and seen == values for heading, seen, _ in columns):
                continue
            size = f" ({gpu.gpu_bytes / GIB:g} GiB GPU)" if index or len(plan.gpus) > 1 and phase.name == "generation" else ""
            columns.append((phase.name + size, values, phase.total))
    return columns


def markdown(plan: Plan) -> str:
    """A table of GiB per GPU per phase, then whether it fits on each GPU size."""
    setting = ", ".join(f"{key} {value}" for key, value in plan.setting.items())
    columns = _columns(plan)
    notes: dict[str, str] = {}
    for gpu in plan.gpus:
        for phase in gpu.phases:
            for item in phase.items:
                notes.setdefault(item.name, item.note)
    lines = [
        f"Memory plan ({setting})",
        "",
        "| GiB per GPU | " + " | ".join(heading for heading, _, _ in columns) + " | note |",
        "| --- | " + " | ".join("---:" for _ in columns) + " | --- |",
    ]
    for name, note in notes.items():
        cells = [_gib(values[name]) if name in values else "" for _, values, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {note} |")
    lines.append("| **total** | " + " | ".join(f"**{_gib(total)}**" for _, _, total in columns) + " | |")
    lines += ["", "| GPU | peak | fits | largest micro-batch that fits |", "| --- | ---: | --- | ---: |"]
    for gpu in plan.gpus:
        peak_phase = max(gpu.phases, key=lambda phase: phase.total).name
        verdict = "yes" if gpu.fits else f"no: {gpu.problem}" if gpu.problem else "no"
        largest = gpu.largest_micro_batch if gpu.largest_micro_batch is not None else "none"
        lines.append(f"| {gpu.gpu_bytes / GIB:g} GiB | {_gib(gpu.peak)} ({peak_phase}) | {verdict} | {largest} |")
    if plan.host_bytes:
        lines += ["", f"Host memory for the offloaded states (DeepSpeed's estimate, per node): {_gib(plan.host_bytes)} GiB."]
    return "\n".join(lines)


def as_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: every item in bytes, plus each GPU size's peak and verdict."""
    document = dataclasses.asdict(plan)
    for gpu, data in zip(plan.gpus, document["gpus"]):
        data["peak_bytes"] = gpu.peak
        data["fits"] = gpu.fits
        for phase, phase_data in zip(gpu.phases, data["phases"]):
            phase_data["total_bytes"] = phase.total
    return document
