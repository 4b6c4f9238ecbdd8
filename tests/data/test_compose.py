"""Datasets named by conf/data option: training's data.eval_sets (evaluate's datasets are in test_evaluate.py)."""

import pytest

from medrlvr.config import ConfigError, DataConfig, PromptConfig
from medrlvr.data.compose import eval_set_configs, eval_set_params, heldout_sets

PROMPT = PromptConfig(template="r1_zero", response_prefix="")


def test_no_eval_sets_by_default():
    assert eval_set_configs(DataConfig()) == {}
    assert eval_set_params(DataConfig(), eval_ood=False) == {
        "eval_set/bundled_validation/data": "bundled", "eval_set/bundled_validation/split": "validation"
    }


def test_eval_sets_get_the_training_prompt_and_their_own_splits():
    eval_sets = {"medqa_5opt": {"path": "/d/medqa"}, "mmlu_pro_health": {}}
    data = DataConfig(name="medqa", prompt=PROMPT, eval_sets=eval_sets)
    sets = eval_set_configs(data)
    assert sets["medqa_5opt"].path == "/d/medqa" and all(s.prompt == PROMPT for s in sets.values())
    assert eval_set_params(data, eval_ood=False) == {
        "eval_set/medqa_validation/data": "medqa", "eval_set/medqa_validation/split": "validation",
        "eval_set/medqa_5opt/data": "medqa", "eval_set/medqa_5opt/split": "test",
        "eval_set/mmlu_pro_health/data": "mmlu_pro_health", "eval_set/mmlu_pro_health/split": "test",
    }
    assert list(eval_set_configs(DataConfig(eval_sets=["bundled_ood"]))) == ["bundled_ood"]


def test_bad_eval_sets_name_the_key():
    with pytest.raises(ConfigError, match="^data.eval_sets: no data config 'mmlu'"):
        eval_set_configs(DataConfig(eval_sets=["mmlu"]))
    with pytest.raises(ConfigError, match="^data.eval_sets: expected a list"):
        eval_set_configs(DataConfig(eval_sets=3))


def test_heldout_sets_are_named_by_data_and_split_and_a_set_named_twice_is_evaluated_once():
    data = DataConfig(name="bundled", ood_split="ood", eval_sets=["bundled_ood"])
    sets = heldout_sets(data, eval_ood=True)
    assert list(sets) == ["bundled_validation", "bundled_ood"] and sets["bundled_ood"] == (data, "ood")
    assert [split for _, split in heldout_sets(data, eval_ood=False).values()] == ["validation", "ood"]


def test_an_eval_set_named_like_another_set_is_refused_naming_the_key():
    data = DataConfig(name="bundled", ood_split="ood", eval_sets={"bundled_ood": {"test_split": "test"}})
    with pytest.raises(ConfigError, match="^data.eval_sets: 'bundled_ood' already names the evaluation of bundled/ood"):
        heldout_sets(data, eval_ood=True)
    assert list(heldout_sets(data, eval_ood=False)) == ["bundled_validation", "bundled_ood"]
