"""End-to-end: what tiny training runs log to MLflow is dense and is what the README's metric table documents."""

import os
import re
import subprocess
from itertools import takewhile
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medrlvr.analysis.classifier import FLAGS, Stage
from medrlvr.rewards.functions import CORRECTNESS, PARTIAL_FORMAT_CREDIT, REWARDS
from medrlvr.rewards.parsing import FORMAT_ERRORS

pytestmark = pytest.mark.slow

README = Path(__file__).parents[2] / "README.md"
FIXTURES = Path(__file__).parents[1] / "fixtures"
PLACEHOLDERS = {
    "error": "|".join(FORMAT_ERRORS),
    "stage": "|".join(stage.slug for stage in Stage),
    "flag": "|".join(name for name in FLAGS if name != "format_failure"),
    "set": "bundled_validation|bundled_ood",
    "K": r"\d+",
    "X": "[A-J]",
    # a reward's components, and the rewards' names (the components of reward=weighted)
    "component": "|".join(
        {CORRECTNESS, PARTIAL_FORMAT_CREDIT, *REWARDS, *(p for reward in REWARDS.values() for p in reward.PENALTIES)}
    ),
}
# documented rows no tiny CPU run can show: a GPU's memory, and letters of answered completions (the tiny
# random model answers none); system metrics are off by default (tests/e2e/test_run_record.py turns them on)
NOT_IN_TINY_RUNS = {"perf/max_memory_allocated_gib", "eval/<set>/position_bias_tv", "system/*"}
RUNS = {
    # every optional PPO family that does not skip updates: the OOD evaluation (also during training), the KL loss
    # term, TIS, the actor's and critic's gradient norms
    "ppo": (
        "experiment=smoke", "trainer.eval_ood=true", "trainer.eval_every=1", "algo.kl_loss_coef=0.01", "algo.tis_cap=2.0",
        "algo.separate_clipping=true",
    ),
    "sft": (
        "experiment=smoke_sft", "data=medqa_5opt", f"data.path={FIXTURES / 'medqa_5opt'}", "data.batch_size=4",
        "trainer.eval_before=false", "trainer.eval_after=false",
    ),
    "filter": (
        "experiment=smoke", "algo.filter_equal_reward_groups=true", "trainer.max_steps=1",
        "trainer.eval_before=false", "trainer.eval_after=false",
    ),
}


def train(folder: Path, overrides: tuple[str, ...]) -> dict[str, list[int]]:
    """Run the training CLI; return each logged metric key with the steps it has values at."""
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable, "-m", "medrlvr.train", *overrides, f"logger.tracking_uri={uri}",
            "logger.experiment_name=keys", f"trainer.output_dir={folder / 'out'}", "trainer.num_threads=1",
            "trainer.save_model=false",
        ],
        cwd=folder, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("keys").experiment_id])
    run_id = run.info.run_id
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict[str, dict[str, list[int]]]:
    root = tmp_path_factory.mktemp("metric_keys")
    return {name: train(root / name, overrides) for name, overrides in RUNS.items()}


def documented_patterns() -> list[str]:
    """The key patterns of the README's metric table (first column, in backticks)."""
    lines = README.read_text().split("### Metrics logged to MLflow", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(takewhile(lambda line: line.startswith("|"), lines[start:]))
    rows = [line for line in table if line.startswith("| `")]
    return [pattern for row in rows for pattern in re.findall(r"`([^`]+)`", re.split(r"(?<!\\)\|", row)[1])]


def to_regex(pattern: str) -> re.Pattern:
    """``{a,b}`` → either alternative, ``<name>`` → :data:`PLACEHOLDERS`' values."""
    parts = re.split(r"(\{[^}]+\}|<[^>]+>)", pattern)
    regex = "".join(
        f"(?:{'|'.join(map(re.escape, part[1:-1].split(',')))})" if part.startswith("{")
        else f"(?:{PLACEHOLDERS[part[1:-1]]})" if part.startswith("<")
        else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


def test_every_training_key_has_a_value_at_every_iteration(logged):
    for name, keys in logged.items():
        steps = sorted({step for key, history in keys.items() if not key.startswith("eval/") for step in history})
        assert steps == list(range(1, steps[-1] + 1)), name
        sparse = {key: history for key, history in keys.items() if not key.startswith("eval/") and history != steps}
        assert not sparse, f"{name}: keys without a value at every iteration {steps}: {sparse}"
    evaluation = {key: history for key, history in logged["ppo"].items() if key.startswith("eval/")}
    assert evaluation and all(history == [0, 1, 2] for history in evaluation.values()), evaluation  # eval_every=1
    assert {f"format_error/{error}" for error in FORMAT_ERRORS} <= set(logged["ppo"])
    assert {f"eval/bundled_ood/chosen_{x}" for x in "ABCDEFGHIJ"} <= set(logged["ppo"])


def test_readme_table_documents_every_logged_key(logged):
    patterns = {pattern: to_regex(pattern) for pattern in documented_patterns()}
    keys = {key for run in logged.values() for key in run}
    undocumented = sorted(key for key in keys if not any(regex.fullmatch(key) for regex in patterns.values()))
    assert not undocumented, f"logged but not in the README's metric table: {undocumented}"
    unseen = sorted(
        pattern for pattern, regex in patterns.items()
        if pattern not in NOT_IN_TINY_RUNS and not any(regex.fullmatch(key) for key in keys)
    )
    assert not unseen, f"in the README's metric table but logged by no run: {unseen}"
