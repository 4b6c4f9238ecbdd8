"""One set of defaults: each schema's defaults are its group's default choice, and the README's configuration
table lists every choice of every group."""

import dataclasses
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import AlgoConfig, CompareConfig, EvaluateConfig, TrainConfig, register_configs
from medrlvr.paths import config_dir
from medrlvr.rewards.functions import LengthPenaltyReward

register_configs()
CONF = config_dir()
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
# conf/ folders that are config groups of a run (hydra/ holds Hydra's own launcher settings)
GROUPS = sorted(path.name for path in CONF.iterdir() if path.is_dir() and path.name != "hydra")


def composed(config_name, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=list(overrides)))


def schema_defaults(schema, **groups):
    node = OmegaConf.structured(schema)
    for key, group_schema in groups.items():
        node[key] = OmegaConf.structured(group_schema)
    return OmegaConf.to_container(node)


@pytest.mark.parametrize(
    "config_name, schema, groups",
    [("config", TrainConfig, {"algo": AlgoConfig}), ("evaluate", EvaluateConfig, {}), ("compare", CompareConfig, {})],
)
def test_schema_defaults_are_the_default_choices(config_name, schema, groups):
    # conf/config.yaml picks model/smollm2, data/bundled, algo/ppo, trainer/cpu, ...: with no overrides the
    # composed config must be the dataclasses' defaults, key for key
    got, want = composed(config_name), schema_defaults(schema, **groups)
    differences = {
        f"{group}.{key}": (got[group].get(key), want[group].get(key))
        for group in want
        if isinstance(want[group], dict)
        for key in set(got[group]) | set(want[group])
        if got[group].get(key, "<absent>") != want[group].get(key, "<absent>")
    }
    assert differences == {}, "YAML value vs dataclass default"
    assert got == want


def test_length_penalty_reward_defaults_are_the_yaml_choice():
    reward = composed("config", ["reward=length_penalty"])["reward"]
    fields = {field.name: field.default for field in dataclasses.fields(LengthPenaltyReward)}
    assert (fields["min_reasoning_words"], fields["penalty_coef"]) == (reward["min_reasoning_words"], reward["penalty_coef"])
    assert (fields["min_reasoning_words"], fields["penalty_coef"]) == (20, 0.5)


def table_row(group):
    """The choices cell of the README configuration table's row for ``group``."""
    match = re.search(rf"^\| `{group}` \| ([^|]+) \|", README, re.MULTILINE)
    assert match, f"README.md's configuration table has no row for `{group}`"
    return match.group(1)


@pytest.mark.parametrize("group", GROUPS)
def test_readme_configuration_table_lists_every_choice(group):
    listed = set(re.findall(r"`([^`]+)`", table_row(group)))
    choices = {path.stem for path in (CONF / group).glob("*.yaml")}
    assert choices - listed == set(), f"README.md's configuration table omits {group}= choices"
    assert listed - choices == set(), f"README.md's configuration table lists {group}= choices that do not exist"


def test_the_table_check_reads_the_rows():
    assert GROUPS == ["algo", "analysis", "data", "experiment", "logger", "model", "reward", "rollout", "trainer"]
    assert "`smollm2` (default)" in table_row("model")
