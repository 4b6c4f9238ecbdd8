"""Grid expansion, Optuna distributions from Hydra's override grammar, conditional search spaces, trial tags."""

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from medrlvr.config import LoggerConfig
from medrlvr.sweeping import tags as T
from medrlvr.sweeping.grid import grid
from medrlvr.sweeping.space import SearchSpace, distribution, override_value, search_space

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


REWARDS = ["reward=choice(default, length_penalty, partial_format)", "algo.kl_coef=interval(0.0, 0.1)"]
CONDITIONAL = {
    "reward": {
        "length_penalty": {
            "reward.penalty_coef": "interval(0.0, 1.0)", "reward.min_reasoning_words": "range(10, 60, 10)"
        },
        "partial_format": {"reward.partial_format": "interval(-0.9, -0.1)"},
    }
}


def sample_trials(space: SearchSpace, count: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=count))
    trials = []
    for _ in range(count):
        trial = study.ask()
        trials.append(space.sample(trial))
        assert set(trial.params) == set(trials[-1])
        study.tell(trial, 0.0)
    return trials


def test_conditional_parameters_are_sampled_only_with_their_choice():
    space = SearchSpace.parse(PARSER, ["data.option_count=4", *REWARDS], CONDITIONAL)
    assert space.names == [
        "reward", "algo.kl_coef", "reward.penalty_coef", "reward.min_reasoning_words", "reward.partial_format"
    ]
    trials = sample_trials(space, 30)
    assert trials == sample_trials(space, 30)  # a fixed seed samples the same trials
    own = {
        "default": set(),
        "length_penalty": {"reward.penalty_coef", "reward.min_reasoning_words"},
        "partial_format": {"reward.partial_format"},
    }
    assert {trial["reward"][1] for trial in trials} == set(own)
    for trial in trials:
        assert set(trial) - {"reward", "algo.kl_coef"} == own[trial["reward"][1]]
        overrides = space.overrides(trial)
        assert overrides[0] == "data.option_count=4" and f"reward={trial['reward'][1]}" in overrides
        assert ("reward.penalty_coef" in " ".join(overrides)) == (trial["reward"][1] == "length_penalty")


def test_a_choice_fixed_on_the_command_line_searches_its_branch_in_every_trial():
    space = SearchSpace.parse(PARSER, [*REWARDS, "reward=length_penalty", "reward.min_reasoning_words=30"], CONDITIONAL)
    assert space.names == ["algo.kl_coef", "reward.penalty_coef"] and space.branches == {}
    assert space.fixed == ["reward=length_penalty", "reward.min_reasoning_words=30"]


@pytest.mark.parametrize(
    "overrides, conditional, message",
    [
        (["algo.kl_coef=interval(0, 1)"], {"reward": {}}, r"conditional\.reward: reward must be a choice\(\)"),
        (["reward=choice(default)"], {"reward": {"length": {"x": "interval(0, 1)"}}}, r"not one of reward's choices"),
        (["reward=choice(default)"], {"reward": {"default": {"x": "0.5"}}}, r"\['x=0.5'\] are not search spaces"),
        (
            ["reward=choice(default)", "x=interval(0, 1)"], {"reward": {"default": {"x": "interval(0, 2)"}}},
            r"\['x'\] are also in hydra.sweeper.params",
        ),
        (["reward=default"], {}, "holds no search space"),
    ],
)
def test_bad_conditional_spaces_name_the_key(overrides, conditional, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.parse(PARSER, overrides, conditional)


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
