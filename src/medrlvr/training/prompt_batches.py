"""The training prompts in batches: a seeded order over every pass of the data, each process's own share."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, RandomSampler

from medrlvr.data.schema import ExampleBatch, MCQExample
from medrlvr.data.transforms import shuffled_per_draw
from medrlvr.training.distributed import rank_order


def prompt_loader(
    examples: list[MCQExample],
    batch_size: int,
    iterations: int,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_options: bool = False,
) -> DataLoader:
    """Batches ``start + 1`` to ``iterations`` of prompts, reshuffled (seeded) each pass over the data.

    The order depends only on ``seed``, so a run resumed at ``start`` sees the batches it had not reached.
    With ``world_size`` processes, each iteration draws ``batch_size × world_size`` prompts and process
    ``rank`` gets its own ``batch_size`` of them. ``shuffle_options`` re-shuffles a question's options each time
    it is drawn (``data.shuffle_options_each_epoch``, :func:`medrlvr.data.transforms.shuffled_per_draw`).
    """
    block = batch_size * world_size
    sampler = RandomSampler(
        examples, replacement=False, num_samples=block * iterations, generator=torch.Generator().manual_seed(seed)
    )
    indices = list(sampler)
    drawn = shuffled_per_draw(examples, indices, seed) if shuffle_options else [examples[i] for i in indices]
    order = rank_order(list(range(len(indices)))[start * block :], batch_size, rank, world_size)
    return DataLoader([drawn[i] for i in order], batch_size=batch_size, shuffle=False, collate_fn=ExampleBatch)
