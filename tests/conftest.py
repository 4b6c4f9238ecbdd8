"""Shared fixtures: one torch thread per test process, and the tiny model's tokenizer."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from medrlvr.models.loading import load_tokenizer

    return load_tokenizer("tiny")
