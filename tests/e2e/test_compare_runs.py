"""End-to-end: tiny PPO and SFT trainings with the OOD evaluation and an evaluation nested under the SFT run,
all recorded in MLflow, then the comparison table built from those real runs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medrlvr.evaluation import checkpoint
from medrlvr.comparison.run import run
from medrlvr.config import CompareConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.training.run import train

pytestmark = pytest.mark.slow
register_configs()


def compose_run(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def test_compare_reads_real_training_and_evaluation_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"logger.tracking_uri={uri}", "logger.experiment_name=study", "trainer.num_threads=1",
              "trainer.eval_ood=true", "trainer.log_samples_every=0", "seed=1"]
    for experiment, save in (("smoke", "false"), ("smoke_sft", "true")):
        composed = compose_run("config", [f"experiment={experiment}", f"trainer.save_model={save}", *common])
        train(to_train_config(composed), tmp_path / experiment, OmegaConf.to_yaml(composed))
    client = MlflowClient(tracking_uri=uri)
    trained = {r.data.params["algo/name"]: r for r in client.search_runs([client.get_experiment_by_name("study").experiment_id])}
    assert trained["ppo"].data.metrics["eval/bundled_ood/questions_options_10"] == 4  # the OOD split has 10 options
    sft = trained["sft"]

    eval_cfg = OmegaConf.to_object(compose_run("evaluate", [
        "model=tiny", f"checkpoint={tmp_path / 'smoke_sft' / 'policy'}", "limit=2", "rollout.eval_max_new_tokens=8",
        "num_threads=1", f"logger.tracking_uri={uri}", f"parent_run_id={sft.info.run_id}",
    ]))
    (tmp_path / "evaluate").mkdir()
    report = checkpoint.run(eval_cfg, tmp_path / "evaluate")
    assert list(report["datasets"]) == ["bundled", "bundled_ood"]  # the default: test split and OOD split

    cells = run(CompareConfig(experiments=["study"], tracking_uri=uri), tmp_path / "compare")
    found = {(c.method, c.column): c for c in cells}
    assert set(found) == {
        ("base", "ID bundled/validation (4 q)"), ("SFT", "ID bundled/validation (4 q)"),
        ("RLVR (ppo)", "ID bundled/validation (4 q)"), ("base", "OOD bundled/ood (4 q)"),
        ("SFT", "OOD bundled/ood (4 q)"), ("RLVR (ppo)", "OOD bundled/ood (4 q)"),
        ("SFT", "ID bundled/test (2 q)"), ("SFT", "OOD bundled/ood (2 q)"),
    }
    assert found["SFT", "OOD bundled/ood (4 q)"].values["accuracy"] == [sft.data.metrics["eval/bundled_ood/accuracy"]]
    assert found["RLVR (ppo)", "ID bundled/validation (4 q)"].values["format_rate"] == [
        trained["ppo"].data.metrics["eval/bundled_validation/format_rate"]
    ]
    nested = found["SFT", "OOD bundled/ood (2 q)"]
    assert nested.seeds == ["1"] and nested.values["accuracy"] == [report["datasets"]["bundled_ood"]["metrics"]["accuracy"]]
    assert Path(tmp_path / "compare" / "compare.png").stat().st_size > 0
