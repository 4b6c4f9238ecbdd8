"""conf/evaluate.yaml composes with the model/data/rollout/logger groups and both spellings of `datasets`."""

from dataclasses import replace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import ConfigError, EvaluateConfig, register_configs
from medrlvr.paths import config_dir
from medrlvr.evaluation.checkpoint import dataset_configs

register_configs()


def compose_evaluate(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="evaluate", overrides=overrides))


def test_defaults_evaluate_the_bundled_test_and_ood_splits_greedily():
    cfg = compose_evaluate([])
    assert isinstance(cfg, EvaluateConfig)
    assert (cfg.data.name, cfg.data.test_split, cfg.num_samples, cfg.temperature, cfg.checkpoint) == ("bundled", "test", 1, 0.0, None)
    datasets = dataset_configs(cfg)
    assert {name: data.test_split for name, data in datasets.items()} == {"bundled": "test", "bundled_ood": "ood"}
    assert datasets["bundled_ood"] == replace(cfg.data, test_split="ood")


def test_ood_data_choice_and_data_without_ood_split_evaluate_one_dataset():
    ood = dataset_configs(compose_evaluate(["data=bundled_ood"]))
    assert list(ood) == ["bundled"] and ood["bundled"].test_split == "ood"
    assert list(dataset_configs(compose_evaluate(["data=mmlu_pro_health"]))) == ["mmlu_pro_health"]
    assert list(dataset_configs(compose_evaluate(["datasets=[bundled]"]))) == ["bundled"]  # an explicit list is exact


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


@pytest.mark.parametrize("override, key", [("temperature=inf", "temperature"), ("seed=-1", "seed"),
                                           ("rollout.eval_max_new_tokens=0", "rollout.eval_max_new_tokens")])
def test_out_of_range_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', chr(92) + '.')}: "):
        compose_evaluate([override])
