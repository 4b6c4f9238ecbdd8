"""Fixtures shared by the multi-process tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> tuple[Path, float]:
    """The tiny model saved in Hugging Face format (ZeRO-3 loads it partitioned) and its parameter sum."""
    from medrlvr.models.loading import load_causal_lm, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny") / "model"
    tokenizer = load_tokenizer("tiny")
    model = load_causal_lm("tiny", tokenizer, seed=42)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, float(sum(p.double().sum() for p in model.parameters()))
