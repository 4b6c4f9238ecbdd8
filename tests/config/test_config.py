"""Config composition: every group option composes and validates; typos and wrong types fail clearly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from medrlvr.config import ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir

register_configs()
CONF = config_dir()
GROUPS = ["model", "data", "reward", "algo", "rollout", "trainer", "logger", "analysis", "experiment"]


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    "group, option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
)
def test_every_group_option_composes_and_validates(group, option):
    cfg = to_train_config(compose_train([f"{group}={option}"]))
    assert cfg.trainer.max_steps >= 1


def test_defaults_and_common_overrides():
    cfg = to_train_config(
        compose_train(["algo.kl_coef=0.01", "algo.clip_range=0.1", "data.option_count=4", "trainer.max_steps=20"])
    )
    assert (cfg.algo.kl_coef, cfg.algo.clip_range, cfg.data.option_count, cfg.trainer.max_steps) == (0.01, 0.1, 4, 20)
    assert cfg.model.name_or_path == "bundled:smollm2-135m-instruct"
    assert cfg.reward.name == "default"


def test_length_penalty_reward_choice():
    cfg = to_train_config(compose_train(["reward=length_penalty"]))
    assert cfg.reward.name == "length_penalty" and cfg.reward.min_reasoning_words > 0 and cfg.reward.penalty_coef > 0


def test_typo_in_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(["algo.kl_cof=0.01"])
    assert "kl_cof" in str(err.value) or "kl_cof" in str(err.value.__cause__)


def test_wrong_type_fails_naming_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_train(["algo.clip_range=wide"])
    assert "clip_range" in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize(
    "override, key",
    [
        ("algo.clip_range=0", "algo.clip_range"),
        ("data.option_count=11", "data.option_count"),
        ("rollout.num_samples=0", "rollout.num_samples"),
        ("algo.mini_batch_size=1000", "algo.mini_batch_size"),
        ("algo.micro_batch_size=3", "algo.micro_batch_size"),  # does not divide the minibatch of 16
        ("algo.micro_batch_size=32", "algo.micro_batch_size"),
        ("algo.forward_batch_size=0", "algo.forward_batch_size"),
        ("model.logits_chunk_size=0", "model.logits_chunk_size"),
        ("reward.name=fancy", "reward.name"),
        ("rollout.eval_max_new_tokens=0", "rollout.eval_max_new_tokens"),
        ("rollout.top_k=-1", "rollout.top_k"),
        ("rollout.temperature=inf", "rollout.temperature"),
        ("rollout.temperature=nan", "rollout.temperature"),
        ("rollout.top_p=nan", "rollout.top_p"),
        ("rollout.generation_batch_size=0", "rollout.generation_batch_size"),
        ("rollout.stop_strings=['</answer>','']", "rollout.stop_strings"),
        ("seed=-1", "seed"),
        ("model.lora_dropout=1", "model.lora_dropout"),
        ("model.lora_alpha=0", "model.lora_alpha"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("trainer.accelerator=npu", "trainer.accelerator"),
        ("trainer.eval_every=0", "trainer.eval_every"),
        ("logger.samples_per_table=0", "logger.samples_per_table"),
        ("seed=4294967296", "seed"),
    ],
)
def test_out_of_range_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_train_config(compose_train([override]))


def test_cli_prints_config_from_another_directory(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "--cfg", "job", "reward=length_penalty"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "min_reasoning_words: 20" in result.stdout


def test_cli_typo_exits_nonzero_with_message(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "algo.kl_cof=0.01"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "kl_cof" in result.stderr


def test_partial_format_score_must_lie_between_format_error_and_wrong_answer():
    assert to_train_config(compose_train(["reward=partial_format"])).reward.partial_format == -0.5
    with pytest.raises(ConfigError, match=r"reward\.partial_format"):
        to_train_config(compose_train(["reward=partial_format", "reward.partial_format=0.5"]))


def test_ood_evaluation_needs_data_with_an_ood_split():
    assert to_train_config(compose_train([])).trainer.eval_ood is False
    assert to_train_config(compose_train(["trainer.eval_ood=true"])).data.ood_split == "ood"
    with pytest.raises(ConfigError, match=r"trainer\.eval_ood: data=medqa has no ood_split"):
        to_train_config(compose_train(["data=medqa", "trainer.eval_ood=true"]))


def test_micro_and_forward_batch_sizes_default_to_the_minibatch():
    cfg = to_train_config(compose_train([]))
    assert cfg.algo.micro_batch_size == cfg.algo.forward_batch_size == cfg.algo.mini_batch_size == 16
    assert cfg.algo.gradient_accumulation_steps == 1
    cfg = to_train_config(compose_train(["algo.micro_batch_size=4"]))
    assert (cfg.algo.forward_batch_size, cfg.algo.gradient_accumulation_steps) == (4, 4)


def test_hydra_run_folders_of_runs_started_in_the_same_second_differ():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    # the time has second resolution; the process id tells apart runs started together
    assert cfg.hydra.run.dir.endswith(f"_{os.getpid()}") and cfg.hydra.sweep.dir.endswith(f"_{os.getpid()}")
