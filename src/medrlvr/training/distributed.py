"""What each process does differently when training runs on several: its own prompts, and metrics combined
over all processes before rank 0 logs them."""

from __future__ import annotations

import torch.distributed as dist

SUMMED = ("perf/generate_tokens_per_s",)


def rank_order(order: list[int], batch_size: int, rank: int, world_size: int) -> list[int]:
    """This process's share of a global prompt order: iteration ``k`` uses the ``k``-th block of
    ``batch_size × world_size`` prompts, and rank ``r`` takes the ``r``-th ``batch_size`` of that block."""
    block = batch_size * world_size
    return [i for start in range(0, len(order), block) for i in order[start + rank * batch_size : start + (rank + 1) * batch_size]]


def combine_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One value per key from every process's metrics: the maximum for ``*_max``, the sum for throughputs,
    the mean otherwise. A key missing on a process counts as 0 there; every process has the same number of
    completions, so the mean of per-process means is the mean over all completions."""
    keys = sorted({key for metrics in per_rank for key in metrics})
    combined = {}
    for key in keys:
        values = [metrics.get(key, 0.0) for metrics in per_rank]
        if key.endswith("_max"):
            combined[key] = max(values)
        elif key in SUMMED:
            combined[key] = sum(values)
        else:
            combined[key] = sum(values) / len(values)
    return combined


def gather_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """:func:`combine_metrics` over all processes (a collective call); the input itself with one process."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return metrics
    per_rank: list[dict[str, float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, metrics)
    return combine_metrics([m for m in per_rank if m is not None])


def close_process_group() -> None:
    """Destroy the default process group if one is open. A process that exits with it open (DeepSpeed's
    ``init_distributed`` and the vLLM engine's placement open it without registering a teardown) can die
    with SIGABRT, "terminate called without an active exception", when Gloo's worker threads are torn down
    at interpreter exit; every entry point calls this before it returns."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
