"""The evaluate command's dataset selection and report helpers (no model involved)."""

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from medrlvr.config import ConfigError, DataConfig, EvaluateConfig
from medrlvr.data.compose import compose_data
from medrlvr.evaluation.checkpoint import by_option_count, dataset_configs, format_table, letter_table


def test_no_datasets_means_the_data_group_choice():
    cfg = EvaluateConfig(data=DataConfig(name="bundled", ood_split=None))
    assert dataset_configs(cfg) == {"bundled": cfg.data}


def test_list_of_names_composes_each_data_config():
    configs = dataset_configs(EvaluateConfig(datasets=["medqa", "mmlu_pro_health", "medmcqa"]))
    assert list(configs) == ["medqa", "mmlu_pro_health", "medmcqa"]
    assert configs["medqa"].variant == "4_options" and configs["medmcqa"].test_split == "validation"


def test_mapping_applies_overrides_per_dataset():
    configs = dataset_configs(EvaluateConfig(datasets={"medqa_5opt": {"path": "/data/medqa.jsonl"}, "bundled": {}}))
    assert configs["medqa_5opt"] == DataConfig(
        name="medqa", variant="5_options", train_split="train", eval_split="dev", ood_split=None, path="/data/medqa.jsonl"
    )
    assert configs["bundled"].path is None


def test_bad_dataset_names_and_keys_fail_clearly():
    with pytest.raises(ConfigError, match="no data config 'medqaa'; available: .*'medqa'"):
        compose_data("medqaa")
    with pytest.raises(ConfigError, match="^datasets: no data config 'medqaa'"):
        dataset_configs(EvaluateConfig(datasets=["medqaa"]))
    with pytest.raises(ConfigKeyError, match="pth"):
        compose_data("medqa", {"pth": "x"})
    with pytest.raises(ValidationError, match="skip_invalid_rows"):
        compose_data("medqa", {"skip_invalid_rows": "maybe"})


def test_sampling_without_temperature_is_refused():
    with pytest.raises(ConfigError, match="temperature"):
        EvaluateConfig(num_samples=4, temperature=0.0)


def test_table_shows_letters_and_option_counts():
    metrics = {
        "num_questions": 2.0, "accuracy": 0.5, "format_rate": 1.0, "reasoning_words": 3.0, "response_tokens": 9.0,
        "position_bias_tv": 0.5, "chosen_A": 1.0, "true_A": 0.5, "true_C": 0.5,
        "accuracy_options_3": 1.0, "questions_options_3": 1.0, "accuracy_options_4": 0.0, "questions_options_4": 1.0,
    }
    letters = letter_table(metrics)
    assert letters == {"chosen": {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}, "true": {"A": 0.5, "B": 0.0, "C": 0.5, "D": 0.0}}
    result = {"split": "test", "metrics": metrics, "letters": letters, "by_option_count": by_option_count(metrics)}
    table = format_table({"toy": result})
    assert "toy" in table and "0.500" in table and " - " in table  # no majority column value without sampling
    assert "3: 1.000 (n=1), 4: 0.000 (n=1)" in table
