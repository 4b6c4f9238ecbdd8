"""conf/evaluate.yaml composes with the model/data/rollout/logger groups and both spellings of `datasets`."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import ConfigError, EvaluateConfig, config_dir, register_configs
from medrlvr.evaluate import dataset_configs

register_configs()


def compose_evaluate(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="evaluate", overrides=overrides))


def test_defaults_evaluate_the_bundled_test_split_greedily():
    cfg = compose_evaluate([])
    assert isinstance(cfg, EvaluateConfig)
    assert (cfg.data.name, cfg.data.test_split, cfg.num_samples, cfg.temperature, cfg.checkpoint) == ("bundled", "test", 1, 0.0, None)
    assert list(dataset_configs(cfg)) == ["bundled"]


def test_list_and_mapping_spellings_from_the_command_line():
    listed = compose_evaluate(["datasets=[medqa,mmlu_pro_health]", "model=tiny"])
    assert list(dataset_configs(listed)) == ["medqa", "mmlu_pro_health"]
    mapped = compose_evaluate(["datasets={medqa_5opt: {path: /x/test.jsonl, skip_invalid_rows: true}, medbullets: {path: /y.jsonl}}"])
    configs = dataset_configs(mapped)
    assert configs["medqa_5opt"].path == "/x/test.jsonl" and configs["medqa_5opt"].skip_invalid_rows
    assert configs["medbullets"].variant == "5_options"


def test_sampling_override_needs_a_temperature():
    with pytest.raises(ConfigError, match="temperature"):
        compose_evaluate(["num_samples=4"])
    assert compose_evaluate(["num_samples=4", "temperature=0.7"]).num_samples == 4
