"""Every sweep file composes, names its experiment, and every grid point / search-space bound validates."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import CategoricalDistribution

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir, sweeps_dir
from medrlvr.sweeping.grid import grid
from medrlvr.sweeping.space import SearchSpace

register_configs()
SWEEPS = sorted(path.stem for path in (sweeps_dir() / "sweep").glob("*.yaml"))
GRIDS = {
    "kl_coef": ("algo.kl_coef", "0.0,0.001,0.01,0.05"),
    "clip_range": ("algo.clip_range", "0.1,0.2,0.3"),
    "option_count": ("data.option_count", "4,5,7,10"),
    "reward_shaping": ("reward", "default,length_penalty,partial_format,composite"),
}


def compose_sweep(name, overrides=(), hydra=False):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+sweep={name}", *overrides], return_hydra_config=hydra)


def test_all_sweeps_are_shipped():
    assert SWEEPS == sorted([*GRIDS, "optuna"])


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_and_names_its_experiment(name):
    cfg = compose_sweep(name, hydra=True)
    assert cfg.logger.experiment_name == f"sweep-{name}" and cfg.logger.sweep == name
    assert cfg.hydra.launcher._target_ == "hydra_plugins.medrlvr_sweeps.plugins.SubprocessLauncher"
    expected = "OptunaSweeper" if name == "optuna" else "GridSweeper"
    assert cfg.hydra.sweeper._target_ == f"hydra_plugins.medrlvr_sweeps.plugins.{expected}"
    to_train_config(compose_sweep(name))


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_every_grid_point_validates(name):
    key, values = GRIDS[name]
    params = dict(compose_sweep(name, hydra=True).hydra.sweeper.params)
    assert params == {key: values}
    jobs = grid(OverridesParser.create().parse_overrides([f"{key}={values}"]))
    assert len(jobs) == len(values.split(","))
    for job in jobs:
        to_train_config(compose_sweep(name, job))


def bound_value(dist, bound):
    """A distribution's low or high end (first or last choice of a categorical)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0 if bound == "low" else -1]
    return getattr(dist, bound)


def test_optuna_search_space_covers_the_four_axes_and_its_bounds_validate():
    sweeper = compose_sweep("optuna", hydra=True).hydra.sweeper
    parser = OverridesParser.create()
    space = SearchSpace.parse(parser, [f"{k}={v}" for k, v in sweeper.params.items()], sweeper.conditional)
    assert space.names == [
        "algo.kl_coef", "algo.clip_range", "data.option_count", "reward", "algo.actor_lr", "algo.critic_lr",
        "reward.penalty_coef", "reward.min_reasoning_words", "reward.partial_format", "reward.leak_penalty",
        "reward.structure_penalty",
    ]
    rewards = space.params["reward"][1].choices
    # every single reward; reward=weighted combines them by a list of entries, which the sweep does not sample
    assert set(rewards) == {path.stem for path in (config_dir() / "reward").glob("*.yaml")} - {"weighted"}
    for reward in rewards:
        branch = space.branches["reward"].get(reward, {})
        for bound in ("low", "high"):
            entries = {**space.params, **branch}
            values = {k: bound_value(dist, bound) for k, (_, dist) in entries.items()}
            values["reward"] = reward
            cfg = to_train_config(compose_sweep("optuna", [f"{k}={v}" for k, v in values.items()]))
            assert cfg.reward.name == reward


def test_plugins_are_discovered_in_the_hydra_plugins_package():
    sweepers = {cls.__name__: cls for cls in Plugins.instance().discover(Sweeper)}
    launchers = {cls.__name__: cls for cls in Plugins.instance().discover(Launcher)}
    assert sweepers["GridSweeper"].__module__ == "hydra_plugins.medrlvr_sweeps.plugins"
    assert sweepers["OptunaSweeper"].__module__ == "hydra_plugins.medrlvr_sweeps.plugins"
    assert launchers["SubprocessLauncher"].__module__ == "hydra_plugins.medrlvr_sweeps.plugins"
