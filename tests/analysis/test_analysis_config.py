"""The `analysis` config node: defaults compose, thresholds override from the command line, ranges are checked."""

import pytest
from hydra import compose, initialize_config_dir

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir

register_configs()


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_analysis_defaults_and_overrides():
    assert to_train_config(compose_train([])).analysis.short_reasoning_words == 8
    cfg = to_train_config(compose_train(["analysis.verbose_reasoning_words=60", "analysis.boundary_min_iterations=2"]))
    assert (cfg.analysis.verbose_reasoning_words, cfg.analysis.boundary_min_iterations) == (60, 2)


@pytest.mark.parametrize(
    "override, key",
    [
        ("analysis.hacker_length_ratio=1", "analysis.hacker_length_ratio"),
        ("analysis.verbose_length_ratio=0.5", "analysis.verbose_length_ratio"),
        ("analysis.verbose_reasoning_words=4", "analysis.verbose_reasoning_words"),
        ("analysis.exploit_phase_fraction=1.5", "analysis.exploit_phase_fraction"),
        ("analysis.seen_fraction=0", "analysis.seen_fraction"),
    ],
)
def test_out_of_range_thresholds_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_train_config(compose_train([override]))
