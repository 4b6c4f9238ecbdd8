"""A saved policy's training config gives evaluation its prompt, format semantics, generation settings and dtype;
the command line still wins."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.evaluation.checkpoint import dataset_configs
from medrlvr.policy_config import POLICY_CONFIG, apply_policy_config, read_policy_config, write_policy_config

register_configs()
STUDY = ["experiment=med_rlvr", "model=tiny", "model.dtype=bfloat16"]


def composed(config_name, overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    write_policy_config(folder, to_train_config(composed("config", STUDY)))
    return read_policy_config(folder)


def evaluate_config(saved, overrides):
    """Compose conf/evaluate.yaml with ``overrides`` and apply the saved config as the evaluate CLI does."""
    cfg = composed("evaluate", overrides)
    taken = apply_policy_config(cfg, saved, overrides)
    return OmegaConf.to_object(cfg), taken


def test_checkpoint_settings_replace_the_evaluation_defaults(saved):
    cfg, taken = evaluate_config(saved, ["checkpoint=/p"])
    assert (cfg.reward.format, cfg.reward.match_option_text) == ("study", False)
    prompt = cfg.data.prompt
    assert (prompt.template, prompt.response_prefix, prompt.one_shot) == ("r1_zero", "", False)
    assert (cfg.rollout.backend, cfg.rollout.eval_max_new_tokens, cfg.rollout.vllm.dtype) == ("vllm", 1024, "bfloat16")
    assert cfg.model.dtype == "bfloat16" and cfg.model.name_or_path == "bundled:smollm2-135m-instruct"
    assert taken["reward.format"] == "study" and "reward.correct_answer" not in taken


def test_command_line_overrides_win_over_the_checkpoint(saved):
    cfg, taken = evaluate_config(saved, ["rollout=hf", "reward.format=strict", "model.dtype=float32"])
    assert (cfg.rollout.backend, cfg.rollout.eval_max_new_tokens) == ("hf", 96)
    assert (cfg.reward.format, cfg.model.dtype) == ("strict", "float32")
    assert not any(key.startswith("rollout.") for key in taken) and "reward.format" not in taken
    cfg, _ = evaluate_config(saved, ["rollout.eval_max_new_tokens=8", "data.prompt.response_prefix='<think>'"])
    assert (cfg.rollout.backend, cfg.rollout.eval_max_new_tokens) == ("vllm", 8)
    assert (cfg.data.prompt.template, cfg.data.prompt.response_prefix) == ("r1_zero", "<think>")


def test_data_and_model_choices_keep_the_checkpoint_prompt_and_dtype(saved):
    cfg, _ = evaluate_config(saved, ["data=medqa_5opt", "model=qwen2_5_3b"])
    assert (cfg.data.name, cfg.data.prompt.template, cfg.model.dtype) == ("medqa", "r1_zero", "bfloat16")


def test_listed_datasets_get_the_evaluation_prompt_unless_their_overrides_set_one(saved):
    cfg, _ = evaluate_config(saved, ["datasets={medqa_5opt: {}, mmlu_pro_health: {prompt: {template: chat}}}"])
    datasets = dataset_configs(cfg)
    assert datasets["medqa_5opt"].prompt == cfg.data.prompt and datasets["medqa_5opt"].variant == "5_options"
    mmlu = datasets["mmlu_pro_health"].prompt
    assert (mmlu.template, mmlu.response_prefix) == ("chat", "")


def test_a_bad_saved_value_names_the_file_and_key(tmp_path, saved):
    (tmp_path / POLICY_CONFIG).write_text(OmegaConf.to_yaml(saved).replace("format: study", "format: loose"))
    with pytest.raises(ConfigError, match="reward.format"):
        evaluate_config(read_policy_config(tmp_path), [])
    (tmp_path / POLICY_CONFIG).write_text("- a list\n")
    with pytest.raises(ConfigError, match=f"{POLICY_CONFIG} is not a mapping"):
        read_policy_config(tmp_path)
    assert read_policy_config(tmp_path / "nowhere") is None
