"""reward.format / reward.match_option_text and data.prompt.template: composition, validation and wiring."""

import pytest
from hydra import compose, initialize_config_dir

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.rewards.parsing import ParseRules
from medrlvr.training.builders import build_reward, parse_rules

register_configs()


def train_config(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=overrides))


def test_cpu_default_keeps_the_strict_format_chat_template_and_pre_fill():
    cfg = train_config([])
    assert (cfg.reward.format, cfg.reward.match_option_text) == ("strict", False)
    assert (cfg.data.prompt.template, cfg.data.prompt.response_prefix) == ("chat", "<think>")


def test_med_rlvr_uses_the_study_format_r1_zero_template_and_no_pre_fill():
    cfg = train_config(["experiment=med_rlvr", "model=tiny"])
    assert (cfg.reward.format, cfg.reward.match_option_text) == ("study", False)
    assert (cfg.data.prompt.template, cfg.data.prompt.response_prefix) == ("r1_zero", "")


def test_med_rlvr_is_one_override_away_from_the_cpu_default_semantics():
    cfg = train_config(
        ["experiment=med_rlvr", "model=tiny", "reward.format=strict", "data.prompt.template=chat",
         "data.prompt.response_prefix='<think>'"]
    )
    prompt = cfg.data.prompt
    assert (cfg.reward.format, prompt.template, prompt.response_prefix) == ("strict", "chat", "<think>")


@pytest.mark.parametrize("reward", ["default", "length_penalty", "partial_format", "composite"])
def test_every_reward_carries_the_parse_rules(reward):
    cfg = train_config([f"reward={reward}", "reward.format=study", "reward.match_option_text=true"])
    assert build_reward(cfg.reward).rules == ParseRules(format="study", match_option_text=True)
    assert parse_rules(cfg.reward) == ParseRules(format="study", match_option_text=True)


def test_composite_keeps_its_parameters():
    reward = build_reward(train_config(["reward=composite", "reward.structure_penalty=0.25"]).reward)
    assert (reward.min_reasoning_words, reward.leak_window_words, reward.leak_penalty, reward.structure_penalty) == (
        10, 10, 0.5, 0.25
    )
    with pytest.raises(ConfigError, match=r"reward\.leak_penalty"):
        train_config(["reward=composite", "reward.leak_penalty=-1"])


def test_length_penalty_keeps_its_parameters():
    reward = build_reward(train_config(["reward=length_penalty"]).reward)
    assert (reward.min_reasoning_words, reward.penalty_coef) == (20, 0.5)


@pytest.mark.parametrize(
    "override, key",
    [("reward.format=loose", "reward.format"), ("data.prompt.template=llama", "data.prompt.template")],
)
def test_unknown_choices_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        train_config([override])


def test_evaluate_reads_completions_like_training():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["reward.format=study"])
    assert cfg.reward.format == "study" and cfg.reward.match_option_text is False


def test_cli_composes_med_rlvr_with_the_tiny_model(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "experiment=med_rlvr", "model=tiny", "--cfg", "job"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "format: study" in out.stdout and "template: r1_zero" in out.stdout
    assert "response_prefix: ''" in out.stdout


def test_direct_prompt_style_is_for_evaluation_only():
    with pytest.raises(ConfigError, match="data.prompt.style: direct is an evaluation prompt"):
        train_config(["data.prompt.style=direct"])
    with pytest.raises(ConfigError, match="data.prompt.style: must be cot or direct, got 'short'"):
        train_config(["data.prompt.style=short"])
