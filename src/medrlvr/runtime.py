"""The process's torch thread pool, sized by the entry points before they build anything."""

from __future__ import annotations

import os

import torch


def set_threads(num_threads: int) -> int:
    """Size torch's thread pool to the free cores (0 = every core this process may use)."""
    threads = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
