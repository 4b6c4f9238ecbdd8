"""Datasets named by conf/data option: training's data.eval_sets (evaluate's datasets are in test_evaluate.py)."""

import pytest

from medrlvr.config import ConfigError, DataConfig, PromptConfig
from medrlvr.data.compose import eval_set_configs, eval_set_params

PROMPT = PromptConfig(template="r1_zero", response_prefix="")


def test_no_eval_sets_by_default():
    assert eval_set_configs(DataConfig()) == {} and eval_set_params(DataConfig()) == {}


def test_eval_sets_get_the_training_prompt_and_their_own_splits():
    eval_sets = {"medqa_5opt": {"path": "/d/medqa"}, "mmlu_pro_health": {}}
    data = DataConfig(name="medqa", prompt=PROMPT, eval_sets=eval_sets)
    sets = eval_set_configs(data)
    assert sets["medqa_5opt"].path == "/d/medqa" and all(s.prompt == PROMPT for s in sets.values())
    assert eval_set_params(data) == {
        "eval_set/medqa_5opt/data": "medqa", "eval_set/medqa_5opt/split": "test",
        "eval_set/mmlu_pro_health/data": "mmlu_pro_health", "eval_set/mmlu_pro_health/split": "test",
    }
    assert list(eval_set_configs(DataConfig(eval_sets=["bundled_ood"]))) == ["bundled_ood"]


def test_bad_eval_sets_name_the_key():
    with pytest.raises(ConfigError, match="^data.eval_sets: no data config 'mmlu'"):
        eval_set_configs(DataConfig(eval_sets=["mmlu"]))
    with pytest.raises(ConfigError, match="^data.eval_sets: expected a list"):
        eval_set_configs(DataConfig(eval_sets=3))
