"""The real evaluation files in ../shared/data load in their published schemas (skipped when absent)."""

from collections import Counter
from pathlib import Path

import pytest

from medrlvr.config import DataConfig
from medrlvr.data.registry import load_split

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    return path


def test_medqa_usmle_test_5_options():
    examples = load_split(DataConfig(name="medqa", variant="5_options", path=str(shared_file("medqa_usmle_test_5opt.jsonl"))), "test")
    assert len(examples) == 1273 and all(e.letters == "ABCDE" for e in examples)
    assert set(Counter(e.answer for e in examples)) == set("ABCDE")


def test_medbullets_loads_as_medqa_schema():
    examples = load_split(DataConfig(name="medqa", variant="5_options", path=str(shared_file("medbullets_op5.jsonl"))), "test")
    assert len(examples) == 308 and all(e.letters == "ABCDE" for e in examples)


def test_mmlu_pro_health_option_counts():
    examples = load_split(DataConfig(name="mmlu_pro_health", path=str(shared_file("mmlu_pro_health.jsonl"))), "test")
    counts = Counter(len(e.options) for e in examples)
    assert len(examples) == 818 and counts[10] == 598 and min(counts) == 3
    ten = next(e for e in examples if len(e.options) == 10)
    assert ten.letters == "ABCDEFGHIJ" and ten.answer in ten.letters
    assert all(e.metadata["category"] == "health" for e in examples)
