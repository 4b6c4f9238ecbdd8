"""The comparison table from a real SQLite MLflow store holding runs logged like training and evaluation runs."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from medrlvr.comparison.measurements import CompareError, dataset_label, distribution, select_runs, trained_data
from medrlvr.comparison.run import run
from medrlvr.comparison.summary import t_interval
from medrlvr.config import CompareConfig

T_975_2 = 4.302653  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)
T_975_1 = 12.706205  # with 1 degree of freedom (tables: 12.706)


def training_run(client, experiment_id, algo, seed, after, after_ood, before=(0.3, 0.5), before_ood=(0.1, 0.4)):
    """A finished run with the params and metrics ``medrlvr.train trainer.eval_ood=true trainer.eval_every=6
    trainer.max_steps=12`` logs (64 questions each): the base model at step 0, a middle value at step 6 that no
    comparison reads, the trained model at step 12."""
    run = client.create_run(experiment_id, tags={"algo": algo}, run_name=f"{algo}-{seed}")
    params = {
        "algo/name": algo, "seed": str(seed), "model/name_or_path": "bundled:smollm2-135m-instruct",
        "data/name": "bundled", "data/train_split": "train", "data/eval_split": "validation", "data/test_split": "test",
        "data/ood_split": "ood", "trainer/eval_ood": "True", "algo/kl_coef": "0.01" if algo != "sft" else "None",
        "eval_set/bundled_validation/data": "bundled", "eval_set/bundled_validation/split": "validation",
        "eval_set/bundled_ood/data": "bundled", "eval_set/bundled_ood/split": "ood",
    }
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    for name, start, end in (("bundled_validation", before, after), ("bundled_ood", before_ood, after_ood)):
        for step, (accuracy, format_rate) in ((0, start), (6, (0.99, 0.99)), (12, end)):
            client.log_metric(run.info.run_id, f"eval/{name}/accuracy", accuracy, step=step)
            client.log_metric(run.info.run_id, f"eval/{name}/format_rate", format_rate, step=step)
            client.log_metric(run.info.run_id, f"eval/{name}/num_questions", 64.0, step=step)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def evaluation_run(client, experiment_id, checkpoint, results, parent=None, seed=42, style="cot"):
    """A finished run as ``medrlvr.evaluate`` logs it: ``results`` maps dataset key -> (data, split, accuracy, questions)."""
    tags = {"kind": "evaluation", **({"mlflow.parentRunId": parent} if parent else {})}
    run_id = client.create_run(experiment_id, tags=tags, run_name="evaluate").info.run_id
    params = {"checkpoint": checkpoint or "None", "model/name_or_path": "bundled:smollm2-135m-instruct",
              "datasets": ",".join(results), "seed": str(seed), "prompt/style": style}
    for key, (data, split, _, _) in results.items():
        params.update({f"{key}/data": data, f"{key}/split": split})
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, (_, _, accuracy, questions) in results.items():
        client.log_metric(run_id, f"{key}/accuracy", accuracy)
        client.log_metric(run_id, f"{key}/format_rate", 1.0)
        client.log_metric(run_id, f"{key}/num_questions", float(questions))
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three SFT seeds and two PPO seeds trained with OOD evaluation, a test-split evaluation nested under one SFT
    run, a base evaluation, a failed run and an unrelated run, in one SQLite store (built once)."""
    folder = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("study", artifact_location=(folder / "artifacts").as_uri())
    ids = {}
    for seed, accuracy, ood in ((1, 0.5, 0.2), (2, 0.6, 0.3), (3, 0.7, 0.1)):
        ids[f"sft{seed}"] = training_run(client, exp, "sft", seed, after=(accuracy, 1.0), after_ood=(ood, 0.9))
    for seed, accuracy, ood in ((1, 0.55, 0.35), (2, 0.65, 0.45)):
        ids[f"ppo{seed}"] = training_run(client, exp, "ppo", seed, after=(accuracy, 0.95), after_ood=(ood, 0.8))
    both = {"bundled": ("bundled", "test", 0.64, 75), "bundled_ood": ("bundled", "ood", 0.25, 140)}
    ids["eval_sft1"] = evaluation_run(client, exp, "/out/sft1/policy", both, parent=ids["sft1"])
    ids["eval_base"] = evaluation_run(client, exp, None, {**both, "bundled": ("bundled", "test", 0.32, 75)})
    failed = client.create_run(exp, tags={"algo": "ppo"}).info.run_id
    client.log_param(failed, "algo/name", "ppo")
    client.set_terminated(failed, "FAILED")
    other = client.create_run(exp, run_name="sweep parent").info.run_id
    client.set_terminated(other, "FINISHED")
    return folder / "mlflow.db", ids


@pytest.fixture()
def store(template, tmp_path):
    """A copy of the template store for one test: (tracking URI, client, run ids, tmp_path)."""
    database, ids = template
    shutil.copy(database, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(tracking_uri=uri), ids, tmp_path


def run_text(uri, out):
    run(CompareConfig(experiments=["study"], tracking_uri=uri), out)
    return (out / "compare.md").read_text()


def cells_by_key(cells):
    return {(c.method, c.column): c for c in cells}


def test_t_interval_by_hand():
    one = t_interval([0.4], 0.95)
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high, one.half_width) == (1, 0.4, None, None, None, 0.0)
    three = t_interval([0.5, 0.6, 0.7], 0.95)
    half = T_975_2 * 0.1 / math.sqrt(3)  # s = 0.1
    assert three.mean == pytest.approx(0.6) and three.std == pytest.approx(0.1)
    assert (three.ci_low, three.ci_high) == (pytest.approx(0.6 - half, rel=1e-6), pytest.approx(0.6 + half, rel=1e-6))
    assert t_interval([0.5, 0.6, 0.7], 0.9).half_width < three.half_width


def test_table_groups_methods_and_datasets_over_seeds(store):
    uri, _, ids, tmp_path = store
    cells = run(CompareConfig(experiments=["study"], tracking_uri=uri), tmp_path / "out")
    found = cells_by_key(cells)
    assert set(found) == {
        ("base", "ID bundled/validation (64 q)"), ("SFT", "ID bundled/validation (64 q)"),
        ("RLVR (ppo)", "ID bundled/validation (64 q)"), ("base", "OOD bundled/ood (64 q)"),
        ("SFT", "OOD bundled/ood (64 q)"), ("RLVR (ppo)", "OOD bundled/ood (64 q)"),
        ("base", "ID bundled/test (75 q)"), ("SFT", "ID bundled/test (75 q)"),
        ("base", "OOD bundled/ood (140 q)"), ("SFT", "OOD bundled/ood (140 q)"),
    }
    sft = found["SFT", "ID bundled/validation (64 q)"]
    assert sft.seeds == ["1", "2", "3"] and sft.values["accuracy"] == [0.5, 0.6, 0.7]
    accuracy = sft.stats["accuracy"]
    assert accuracy.mean == pytest.approx(0.6) and accuracy.half_width == pytest.approx(T_975_2 * 0.1 / math.sqrt(3), rel=1e-6)
    assert sft.stats["format_rate"].mean == 1.0 and sft.stats["format_rate"].half_width == 0.0
    ppo_ood = found["RLVR (ppo)", "OOD bundled/ood (64 q)"].stats["accuracy"]
    assert ppo_ood.n == 2 and ppo_ood.mean == pytest.approx(0.4)
    assert ppo_ood.half_width == pytest.approx(T_975_1 * math.sqrt(0.005) / math.sqrt(2), rel=1e-6)  # s² = 0.005
    base = found["base", "ID bundled/validation (64 q)"]
    assert base.seeds == ["1", "2", "3"] and base.stats["accuracy"].mean == pytest.approx(0.3)  # one value per seed
    nested = found["SFT", "ID bundled/test (75 q)"]
    assert nested.run_ids == [ids["eval_sft1"]] and nested.seeds == ["1"] and nested.stats["accuracy"].ci_high is None
    assert found["base", "OOD bundled/ood (140 q)"].run_ids == [ids["eval_base"]]
    # ID before OOD, then dataset and question count, then base, SFT, RLVR
    assert [(c.method, c.column) for c in cells[:5]] == [
        ("base", "ID bundled/test (75 q)"), ("SFT", "ID bundled/test (75 q)"), ("base", "ID bundled/validation (64 q)"),
        ("SFT", "ID bundled/validation (64 q)"), ("RLVR (ppo)", "ID bundled/validation (64 q)"),
    ]
    assert [c.distribution for c in cells] == ["ID"] * 5 + ["OOD"] * 5


def test_outputs_markdown_csv_json_and_png_logged_to_a_comparison_run(store):
    uri, client, _, tmp_path = store
    out = tmp_path / "out"
    run(CompareConfig(experiments=["study"], tracking_uri=uri), out)
    text = (out / "compare.md").read_text()
    assert "## accuracy" in text and "## format_rate" in text
    sft_row = next(line for line in text.splitlines() if line.startswith("| bundled:smollm2-135m-instruct | SFT |"))
    assert "0.600 ± 0.248 (n=3)" in sft_row and "0.640 (n=1)" in sft_row
    assert "skipped run" in text and "FAILED" in text
    rows = list(csv.DictReader((out / "compare.csv").open()))
    ppo = next(r for r in rows if r["method"] == "RLVR (ppo)" and r["dataset"] == "bundled/validation")
    assert (ppo["distribution"], ppo["questions"], ppo["seeds"]) == ("ID", "64", "2")
    assert float(ppo["accuracy_mean"]) == pytest.approx(0.6)
    report = json.loads((out / "compare.json").read_text())
    assert report["experiments"] == ["study"] and len(report["cells"]) == len(rows)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "compare.png").stat().st_size > 10_000
    (comparison,) = client.search_runs([client.get_experiment_by_name("study").experiment_id], "tags.kind = 'compare'")
    files = {a.path for a in client.list_artifacts(comparison.info.run_id, "compare")}
    assert files == {f"compare/compare.{ext}" for ext in ("md", "csv", "json", "png")}
    assert comparison.info.status == "FINISHED" and len(comparison.data.tags["compared_runs"].split(",")) == 8  # finished runs


def test_repeated_seed_keeps_the_latest_run_and_says_so(store):
    uri, client, _, tmp_path = store
    exp = client.get_experiment_by_name("study").experiment_id
    text = run_text(uri, tmp_path / "before")
    assert "share seed" not in text  # the SFT and PPO runs of a seed measure the same base model alike
    rerun = training_run(client, exp, "ppo", 1, after=(0.95, 1.0), after_ood=(0.5, 1.0), before=(0.2, 0.5))
    for seed in (10, 11):
        training_run(client, exp, "ppo", seed, after=(0.6, 1.0), after_ood=(0.4, 1.0))
    cells = run(CompareConfig(experiments=["study"], tracking_uri=uri), tmp_path / "out")
    ppo = cells_by_key(cells)["RLVR (ppo)", "ID bundled/validation (64 q)"]
    assert ppo.seeds == ["1", "2", "10", "11"] and ppo.values["accuracy"] == [0.95, 0.65, 0.6, 0.6] and rerun in ppo.run_ids
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "RLVR (ppo) on bundled/validation (bundled:smollm2-135m-instruct): runs" in text
    assert "base on bundled/validation (bundled:smollm2-135m-instruct): runs" in text  # its base value differs
    assert "base on bundled/ood" not in text  # its OOD base value does not
    assert text.count(f"kept the later one, {rerun}") == 3  # trained ID and OOD, base ID


def test_run_ids_bring_their_nested_evaluations_and_group_by_splits_rows(store):
    uri, client, ids, tmp_path = store
    runs, notes = select_runs(client, [], [ids["sft1"]])
    assert {r.info.run_id for r in runs} == {ids["sft1"], ids["eval_sft1"]} and notes == []
    cfg = CompareConfig(run_ids=[ids["ppo1"], ids["ppo2"]], tracking_uri=uri, group_by=["algo/kl_coef"])
    assert cfg.experiments == []
    cells = run(cfg, tmp_path / "out")
    assert {c.method for c in cells} == {"base", "RLVR (ppo) algo/kl_coef=0.01"}


def test_distribution_inference_and_override(store):
    uri, client, _, tmp_path = store
    runs, _ = select_runs(client, ["study"], [])
    names, ood = trained_data(runs)
    assert (names, ood) == ({"bundled"}, {"bundled/ood"})
    assert [distribution(d, names, ood) for d in ("bundled/test", "bundled/validation", "bundled/ood", "medqa/test")] == [
        "ID", "ID", "OOD", "OOD"
    ]
    assert distribution("bundled/ood", ["bundled"]) == "ID" and distribution("medqa/test", []) == ""
    cells = run(CompareConfig(experiments=["study"], tracking_uri=uri, in_distribution=["bundled/ood"]), tmp_path / "out")
    assert {(c.dataset, c.distribution) for c in cells} == {
        ("bundled/validation", "OOD"), ("bundled/test", "OOD"), ("bundled/ood", "ID")
    }


def test_datasets_sharing_a_loader_get_their_own_cells(store):
    assert [dataset_label(*args) for args in (("bundled", "bundled", "test"), ("bundled_ood", "bundled", "ood"))] == [
        "bundled/test", "bundled/ood"
    ]
    uri, client, ids, tmp_path = store
    experiment = client.get_run(ids["sft1"]).info.experiment_id
    real = {"medqa_5opt": ("medqa", "test", 0.31, 200), "medbullets": ("medqa", "test", 0.22, 200)}
    evaluation_run(client, experiment, "/out/sft1/policy", real, parent=ids["sft1"])
    cells = run(CompareConfig(run_ids=[ids["sft1"]], tracking_uri=uri), tmp_path / "out")
    real_cells = {c.dataset: c for c in cells if c.questions == 200}
    assert set(real_cells) == {"medqa/test [medqa_5opt]", "medqa/test [medbullets]"}
    assert [real_cells[name].values["accuracy"] for name in sorted(real_cells)] == [[0.22], [0.31]]
    assert {c.distribution for c in real_cells.values()} == {"OOD"}  # trained on the bundled data


def test_no_matching_runs_is_a_clear_error(store):
    uri, client, _, tmp_path = store
    client.create_experiment("empty", artifact_location=(tmp_path / "empty").as_uri())
    with pytest.raises(CompareError, match=r"no finished training or evaluation run .* experiment\(s\) \['empty'\]"):
        run(CompareConfig(experiments=["empty"], tracking_uri=uri), tmp_path / "out")
    with pytest.raises(CompareError, match=r"no MLflow experiment 'typo' .* experiments: \['Default', 'empty', 'study'\]"):
        run(CompareConfig(experiments=["typo"], tracking_uri=uri), tmp_path / "out")
    with pytest.raises(CompareError, match=r"metrics: \['acuracy'\] found in none of the selected evaluations"):
        run(CompareConfig(experiments=["study"], metrics=["accuracy", "acuracy"], tracking_uri=uri), tmp_path / "out")
    with pytest.raises(CompareError, match="no MLflow run 'abc123'"):
        run(CompareConfig(run_ids=["abc123"], tracking_uri=uri), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_prints_the_table_and_fails_cleanly(store):
    uri, _, _, tmp_path = store
    command = [sys.executable, "-m", "medrlvr.compare", f"tracking_uri={uri}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run([*command, "experiments=[study]", f"output_dir={tmp_path / 'cli'}"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "| RLVR (ppo) |" in ok.stdout and (tmp_path / "cli" / "compare.png").is_file()
    bad = subprocess.run([*command, "experiments=[typo]"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: no MLflow experiment 'typo'")


def test_base_model_prompted_directly_is_a_row_of_its_own(store):
    uri, client, _, tmp_path = store
    experiment_id = client.get_experiment_by_name("study").experiment_id
    evaluation_run(client, experiment_id, None, {"bundled": ("bundled", "test", 0.2, 75)}, style="direct")
    cells = run(CompareConfig(experiments=["study"], tracking_uri=uri), tmp_path / "out")
    found = cells_by_key(cells)
    assert found["base (direct)", "ID bundled/test (75 q)"].stats["accuracy"].mean == pytest.approx(0.2)
    assert found["base", "ID bundled/test (75 q)"].stats["accuracy"].mean == pytest.approx(0.32)  # prompted to reason
    methods = [c.method for c in cells if c.column == "ID bundled/test (75 q)"]
    assert methods == ["base", "base (direct)", "SFT"]


def test_a_training_run_brings_its_eval_sets_as_datasets(store):
    uri, client, _, tmp_path = store
    experiment_id = client.get_experiment_by_name("study").experiment_id
    run_id = training_run(client, experiment_id, "ppo", 3, after=(0.6, 1.0), after_ood=(0.3, 1.0))
    params = {"eval_set/mmlu_pro_health/data": "mmlu_pro_health", "eval_set/mmlu_pro_health/split": "test"}
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for step, accuracy in ((0, 0.1), (12, 0.25)):
        client.log_metric(run_id, "eval/mmlu_pro_health/accuracy", accuracy, step=step)
        client.log_metric(run_id, "eval/mmlu_pro_health/num_questions", 30.0, step=step)
    found = cells_by_key(run(CompareConfig(experiments=["study"], tracking_uri=uri), tmp_path / "out"))
    assert found["base", "OOD mmlu_pro_health/test (30 q)"].stats["accuracy"].mean == pytest.approx(0.1)
    trained = found["RLVR (ppo)", "OOD mmlu_pro_health/test (30 q)"]
    assert trained.run_ids == [run_id] and trained.stats["accuracy"].mean == pytest.approx(0.25)
