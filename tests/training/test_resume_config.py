"""Resume with a changed config: changeable settings pass and are returned, others are refused naming each."""

from pathlib import Path

import pytest

from medrlvr.config import ConfigError
from medrlvr.training.checkpointing import Checkpoint
from medrlvr.training.resume import ABSENT, check_resume_config, describe, differences

SAVED = {"model": {"lora_rank": 0}, "algo": {"kl_coef": 0.01, "clip_range": 0.2}, "trainer": {"max_steps": 2},
         "rollout": {"stop_strings": ["</answer>"]}, "resume": None}


def checkpoint(config):
    return Checkpoint(path=Path("/ckpt/iter_00002"), iteration=2, run_id="r", state={"config": config})


def changed(**sections):
    return {key: {**value, **sections.get(key, {})} if isinstance(value, dict) else value
            for key, value in SAVED.items()} | {"resume": "auto"}


def test_changeable_settings_are_returned_without_resume_itself():
    new = changed(algo={"kl_coef": 0.05}, trainer={"max_steps": 4})
    assert check_resume_config(checkpoint(SAVED), new) == {"algo.kl_coef": (0.01, 0.05), "trainer.max_steps": (2, 4)}


def test_other_changes_are_refused_naming_each_key_with_both_values():
    new = changed(model={"lora_rank": 8}, algo={"kl_coef": 0.05}, rollout={"stop_strings": ["</a>"]})
    with pytest.raises(ConfigError) as err:
        check_resume_config(checkpoint(SAVED), new)
    message = str(err.value)
    assert message.startswith("resume: settings differ from the checkpoint's (/ckpt/iter_00002/state.json): "
                              "model.lora_rank: 0 -> 8, rollout.stop_strings: ['</answer>'] -> ['</a>'];")
    assert "algo.kl_coef" not in message.split(";")[0] and "\n" not in message


def test_a_key_on_one_side_only_is_a_difference():
    changes = differences({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}})
    assert changes == {"a.c": (ABSENT, 2)} and describe(changes) == "a.c: (absent) -> 2"


def test_a_checkpoint_without_a_config_is_not_checked(caplog):
    assert check_resume_config(checkpoint(None), changed(model={"lora_rank": 8})) == {}
    assert "holds no config" in caplog.text
