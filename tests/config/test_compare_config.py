"""conf/compare.yaml composes onto CompareConfig; run selection defaults and range checks."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import CompareConfig, ConfigError, register_configs
from medrlvr.paths import config_dir

register_configs()


def compose_compare(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="compare", overrides=overrides))


def test_defaults_read_the_training_experiment():
    cfg = compose_compare([])
    assert isinstance(cfg, CompareConfig)
    assert (cfg.experiments, cfg.run_ids, cfg.metrics, cfg.confidence) == (["medrlvr"], [], ["accuracy", "format_rate"], 0.95)


def test_run_ids_alone_select_no_experiment_and_both_can_be_given():
    assert compose_compare(["run_ids=[abc,def]"]).experiments == []
    both = compose_compare(["run_ids=[abc]", "experiments=[study]", "in_distribution=[bundled/test]"])
    assert (both.experiments, both.run_ids, both.in_distribution) == (["study"], ["abc"], ["bundled/test"])


@pytest.mark.parametrize("override, key", [("confidence=1.5", "confidence"), ("metrics=[]", "metrics")])
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        compose_compare([override])
