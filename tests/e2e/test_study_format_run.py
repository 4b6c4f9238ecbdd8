"""End-to-end: one tiny PPO iteration with the study's semantics (format `study`, R1-Zero template, no pre-fill),
saved with the policy for its evaluation, and evaluated before and after on one more dataset (data.eval_sets)."""

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medrlvr.config import register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.policy_config import read_policy_config
from medrlvr.training.run import train

pytestmark = pytest.mark.slow
register_configs()


def test_one_iteration_with_the_study_format_and_r1_zero_prompt(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        "experiment=smoke", "trainer.max_steps=1", "trainer.num_threads=1",
        "reward.format=study", "data.prompt.template=r1_zero", "data.prompt.response_prefix=''",
        "data.eval_sets=[bundled_ood]",
        f"logger.tracking_uri={uri}", "logger.experiment_name=study_format",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    train(to_train_config(composed), tmp_path / "run", OmegaConf.to_yaml(composed))
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("study_format").experiment_id])[0]
    params, metrics = run.data.params, run.data.metrics
    assert (params["reward/format"], params["data/prompt/template"], params["data/prompt/response_prefix"]) == (
        "study", "r1_zero", ""
    )
    assert 0.0 <= metrics["response/text_before_think_rate"] <= 1.0
    history = client.get_metric_history(run.info.run_id, "eval/bundled_validation/text_before_think_rate")
    assert sorted(m.step for m in history) == [0, 1]
    history = client.get_metric_history(run.info.run_id, "eval/bundled_ood/accuracy")  # data.eval_sets
    assert sorted(m.step for m in history) == [0, 1]
    assert metrics["eval/bundled_ood/num_questions"] == 4  # data.eval_size of experiment=smoke
    assert (params["eval_set/bundled_ood/data"], params["eval_set/bundled_ood/split"]) == ("bundled", "ood")
    saved = read_policy_config(tmp_path / "run" / "policy")  # what medrlvr.evaluate checkpoint=... reads
    prompt = saved.data.prompt
    assert (saved.reward.format, prompt.template, prompt.response_prefix) == ("study", "r1_zero", "")


def test_the_study_experiment_runs_on_the_tiny_model(tmp_path):
    """experiment=med_rlvr as it is (format `study`, no pre-fill, PPO with its OpenRLHF conventions, the cosine
    schedule), shrunk to the tiny model on this CPU: two iterations, micro-batches of one sequence accumulated
    into minibatches of two; its MMLU-Pro evaluation set comes from the hub, so it is off here (the test above
    covers data.eval_sets)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        "experiment=med_rlvr", "model=tiny", "data=bundled", "trainer=cpu", "rollout=hf", "trainer.max_epochs=null",
        "trainer.max_steps=2", "trainer.num_threads=1", "data.batch_size=2", "data.eval_size=2",
        "data.eval_sets=null", "rollout.max_new_tokens=8", "rollout.eval_max_new_tokens=8",
        "algo.mini_batch_size=2", "algo.micro_batch_size=1", f"logger.tracking_uri={uri}", "logger.experiment_name=study",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides)
    cfg = to_train_config(composed)
    assert (cfg.reward.format, cfg.data.prompt.response_prefix, cfg.algo.lr_scheduler) == ("study", "", "cosine_with_min_lr")
    train(cfg, tmp_path / "run", OmegaConf.to_yaml(composed))
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("study").experiment_id])[0]
    assert run.info.status == "FINISHED"
    rates = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr/actor"), key=lambda m: m.step)]
    assert len(rates) == 2 and rates[-1] < rates[0] <= 5e-7  # decaying from the peak after the warmup step
    assert "eval/bundled_test/accuracy" in run.data.metrics and run.data.params["algo/loss_aggregation"] == "seq-mean-token-mean"
