"""A sweep's objective is computed on a validation split: configs pointing it at a test split are refused."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medrlvr.config import ConfigError, DataConfig, LoggerConfig, SFTConfig, TrainConfig, register_configs
from medrlvr.paths import config_dir
from medrlvr.sweeping.objective import check_objective

register_configs()


def compose_sweep(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["+sweep=kl_coef", *overrides])


@pytest.mark.parametrize(
    "data, reason",
    [
        (DataConfig(eval_split="test"), "it is data.test_split"),
        (DataConfig(eval_split="ood", ood_split="ood"), "it is data.ood_split"),
        (DataConfig(eval_split="Test", test_split="holdout"), "it is named test"),
        (DataConfig(name="medmcqa", eval_split="validation", test_split="validation"), "it is data.test_split"),
    ],
)
def test_a_sweep_trial_evaluating_a_test_split_is_refused_naming_the_key(data, reason):
    TrainConfig(algo=SFTConfig(), data=data)  # a single run may evaluate any split
    with pytest.raises(ConfigError, match=rf"^data\.eval_split: .*\({reason}.*must not tune on test"):
        TrainConfig(algo=SFTConfig(), data=data, logger=LoggerConfig(sweep="kl_coef", trial=0))
    TrainConfig(algo=SFTConfig(), data=DataConfig(eval_split="dev"), logger=LoggerConfig(trial=0))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.eval_split=test"], "data.eval_split"),
        (["data=bundled_ood"], "data.eval_split"),
        (["experiment=med_rlvr"], "data.eval_split"),  # evaluates on MedQA test in a single run
    ],
)
def test_the_sweeper_refuses_a_test_split_before_any_trial(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        check_objective(compose_sweep(overrides), None)
    check_objective(compose_sweep([*overrides, "data.eval_split=dev", "data.ood_split=null"]), None)


@pytest.mark.parametrize("objective", ["eval/bundled_ood/accuracy", "eval/mmlu_pro_health/format_rate", "eval/x/y"])
def test_an_objective_metric_of_a_held_out_set_is_refused(objective):
    with pytest.raises(ConfigError, match=r"^hydra\.sweeper\.objective: .*must not tune on test: use a metric of data\.eval_split \(eval/bundled_validation/\*\)"):
        check_objective(compose_sweep([]), objective)
    for allowed in (None, "eval/bundled_validation/accuracy", "eval/bundled_validation/format_rate", "reward/mean"):
        check_objective(compose_sweep([]), allowed)
    check_objective(compose_sweep(["data.eval_split=dev", "data.ood_split=null"]), "eval/bundled_dev/accuracy")
    check_objective(OmegaConf.create({"x": 1}), None)  # a config without data (another app)


@pytest.mark.slow
def test_cli_refuses_a_sweep_on_the_test_split_with_one_line(tmp_path):
    command = [sys.executable, "-m", "medrlvr.train", "--multirun", "+sweep=kl_coef", "experiment=smoke",
               "data.eval_split=test"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.eval_split: 'test' is a test split")
    assert "Traceback" not in result.stderr and not (tmp_path / "mlflow.db").exists()
