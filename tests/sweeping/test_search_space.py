"""Grid expansion, Optuna distributions from Hydra's override grammar, and the trial tags."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from medrlvr.config import LoggerConfig
from medrlvr.sweeping import tags as T
from medrlvr.sweeping.grid import grid
from medrlvr.sweeping.optuna_search import distribution, override_value, search_space

PARSER = OverridesParser.create()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tag(log, interval(1e-4, 0.1))", FloatDistribution(1e-4, 0.1, log=True)),
        ("interval(0.1, 0.3)", FloatDistribution(0.1, 0.3)),
        ("int(interval(1, 5))", IntDistribution(1, 5)),
        ("range(0, 60, 10)", IntDistribution(0, 50, step=10)),
        ("choice(default, length_penalty)", CategoricalDistribution(["default", "length_penalty"])),
        ("4,5,7", CategoricalDistribution([4, 5, 7])),
    ],
)
def test_distributions(text, expected):
    assert distribution(PARSER.parse_override(f"x={text}")) == expected


def test_search_space_splits_fixed_values_and_later_overrides_win():
    overrides = PARSER.parse_overrides(
        [
            "algo.kl_coef=interval(0, 0.1)", "reward=length_penalty", "algo.kl_coef=0.02", "+sweep=optuna",
            "algo.clip_range=0.1,0.2",
        ]
    )
    space, fixed = search_space(overrides)
    assert space == {"algo.clip_range": ("algo.clip_range", CategoricalDistribution([0.1, 0.2]))}
    assert fixed == ["reward=length_penalty", "algo.kl_coef=0.02", "+sweep=optuna"]
    assert [override_value(v) for v in (True, None, 1e-05, "default")] == ["true", "null", "1e-05", "default"]


def test_grid_is_the_cartesian_product_and_later_keys_win():
    overrides = PARSER.parse_overrides(["a=1,2", "b=x", "c=3,4", "a=5,6", "+sweep=kl_coef"])
    assert grid(overrides) == [
        ["a=5", "b=x", "c=3", "+sweep=kl_coef"],
        ["a=5", "b=x", "c=4", "+sweep=kl_coef"],
        ["a=6", "b=x", "c=3", "+sweep=kl_coef"],
        ["a=6", "b=x", "c=4", "+sweep=kl_coef"],
    ]
    with pytest.raises(ValueError, match="takes lists"):
        grid(PARSER.parse_overrides(["a=interval(0, 1)"]))


def test_trial_tags_name_sweep_trial_overrides_and_parent():
    cfg = LoggerConfig(experiment_name="sweep-kl_coef", sweep="kl_coef", trial=3, parent_run_id="abc")
    overrides = ["+sweep=kl_coef", "algo.kl_coef=0.01", *T.trial_overrides("sqlite:////tmp/mlflow.db", "abc", 3)]
    assert T.trial_tags(cfg, overrides) == {
        "sweep": "kl_coef",
        "trial": "3",
        "overrides": "+sweep=kl_coef algo.kl_coef=0.01",
        "mlflow.parentRunId": "abc",
    }
    assert T.trial_run_name(cfg) == "kl_coef-3"
    assert T.trial_tags(LoggerConfig(), ["algo.kl_coef=0.01"]) == {}
    assert T.parse_overrides("+sweep=kl_coef algo.kl_coef=0.01 ~x") == {"sweep": "kl_coef", "algo.kl_coef": "0.01"}


def test_quoted_override_values_survive_hydra_parsing():
    for value in ("/tmp/multirun/kl coef/0", "sqlite:////tmp/it's/mlflow.db", "C:\\runs\\x\\", "a\\'b"):
        assert PARSER.parse_override(f"x={T.quote(value)}").value() == value
