"""Bad input on the CLI: a one-line ``error:`` message naming the culprit, a non-zero exit, and nothing
half-written (no MLflow run, no checkpoint). Listed in docs/reliability.md."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from medrlvr.training.checkpointing import save_checkpoint


pytestmark = pytest.mark.slow


def run_main(tmp_path: Path, monkeypatch, capsys, *overrides: str, whole: bool = False) -> tuple[int, str]:
    """The real entry point, in this process (so a dataset can be swapped in); returns exit code and last stderr line (or all of it)."""
    from medrlvr.train import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "medrlvr.train", "experiment=smoke", "trainer.num_threads=1", f"hydra.run.dir={tmp_path / 'hydra'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.output_dir={tmp_path / 'out'}",
        *overrides,
    ])
    with pytest.raises(SystemExit) as exit_info:
        main()
    # Earlier in-process runs may leave log handlers on closed streams; the error is the last line.
    err = capsys.readouterr().err
    return exit_info.value.code, err if whole else err.strip().splitlines()[-1]


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out" / "checkpoints").exists()
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_out_of_range_value_prints_one_line_on_the_real_cli(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medrlvr.train", "experiment=smoke", "algo.clip_range=0",
         f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: algo.clip_range: must be in (0, 1), got 0.0"
    assert "Traceback" not in result.stderr
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.option_count=11", "error: data.option_count: must be between 2 and 10 (letters A-J), got 11"),
        ("trainer.keep_checkpoints=0", "error: trainer.keep_checkpoints: must be >= 1, got 0"),
        ("model.name_or_path=/no/such/model", "error: model path does not exist: /no/such/model"),
        ("logger.tracking_uri=http://127.0.0.1:9", "error: logger.tracking_uri: cannot reach the MLflow server at http://127.0.0.1:9"),
        ("resume=/no/such/checkpoint", "error: resume: no complete checkpoint in /no/such/checkpoint"),
        ("data.path=/no/such/file.jsonl", "error: data.path/hub_name/variant do not apply to data=bundled"),
        ("logger.tracking_uri=file:///no/such/mlruns",
         "error: logger.tracking_uri: cannot use the MLflow store file:///no/such/mlruns ("),
        ("seed=-1", "error: seed: must be between 0 and 4294967295, got -1"),
    ],
)
def test_bad_values_exit_2_with_a_clear_message(tmp_path, monkeypatch, capsys, override, message):
    code, err = run_main(tmp_path, monkeypatch, capsys, override)
    assert code == 2 and err.startswith(message)
    assert_nothing_written(tmp_path)


def test_unwritable_output_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    code, err = run_main(tmp_path, monkeypatch, capsys, f"trainer.output_dir={tmp_path / 'a_file' / 'out'}")
    assert code == 2 and err.startswith(f"error: trainer.output_dir: cannot write to {tmp_path / 'a_file' / 'out'}")
    assert_nothing_written(tmp_path)


def test_unknown_config_key_names_it(tmp_path, monkeypatch, capsys):
    code, err = run_main(tmp_path, monkeypatch, capsys, "trainer.checkpoint_evry=1", whole=True)
    assert code == 1 and "checkpoint_evry" in err
    assert_nothing_written(tmp_path)


def test_malformed_dataset_row_names_file_row_and_field(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "train.jsonl"
    good = '{"question": "Q?", "options": {"A": "v", "B": "w", "C": "x", "D": "y", "E": "z"}, "answer_idx": "A"}'
    broken.write_text(good + '\n{"question": "Q2?"}\n')
    code, err = run_main(tmp_path, monkeypatch, capsys, "data=medqa_5opt", f"data.path={broken}")
    assert code == 2 and err == f"error: {broken}, row 2, field 'options': missing field"
    assert_nothing_written(tmp_path)


def test_all_checkpoints_damaged_refuses_to_resume(tmp_path, monkeypatch, capsys):
    (tmp_path / "out" / "checkpoints" / "iter_00002").mkdir(parents=True)
    code, err = run_main(tmp_path, monkeypatch, capsys, "resume=auto")
    assert code == 2 and err == f"error: resume=auto: every checkpoint in {tmp_path / 'out' / 'checkpoints'} is damaged"


def test_a_fresh_run_in_a_folder_with_another_runs_checkpoints_is_refused(tmp_path, monkeypatch, capsys):
    old = tmp_path / "out" / "checkpoints" / "iter_00002"
    old.mkdir(parents=True)
    (old / "state.json").write_text('{"iteration": 2, "run_id": "0123abcd"}')
    code, err = run_main(tmp_path, monkeypatch, capsys)
    assert code == 2 and err == (
        f"error: trainer.output_dir: {old.parent} holds checkpoints of MLflow run 0123abcd (newest iter_00002):"
        " continue that run with resume=auto, or start a new one in another trainer.output_dir (or delete that folder)"
    )
    assert sorted(p.name for p in old.parent.iterdir()) == ["iter_00002"]
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_question_longer_than_the_model_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    data = tmp_path / "long.jsonl"
    options = {"A": "v", "B": "w", "C": "x", "D": "y", "E": "z"}
    rows = [{"id": "short", "question": "Q?", "options": options, "answer_idx": "A"},
            {"id": "long", "question": "symptom " * 3000 + "?", "options": options, "answer_idx": "B"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, err = run_main(tmp_path, monkeypatch, capsys, "data=medqa_5opt", f"data.path={data}")
    assert code == 2
    assert re.fullmatch(
        r"error: .*: question long: prompt of \d+ tokens \+ rollout.max_new_tokens=8 exceeds the model's context"
        r" of 2048 tokens \(set data.skip_long_prompts=true to leave such questions out\)", err
    ), err
    assert_nothing_written(tmp_path)


def test_a_data_file_that_is_not_utf8_names_file_and_line(tmp_path, monkeypatch, capsys):
    good = '{"question": "Q?", "options": {"A": "v", "B": "w", "C": "x", "D": "y", "E": "z"}, "answer_idx": "A"}'
    data = tmp_path / "latin1.jsonl"
    data.write_bytes((good + "\n" + good.replace("Q?", "Caf\xe9?") + "\n").encode("latin-1"))
    code, err = run_main(tmp_path, monkeypatch, capsys, "data=medqa_5opt", f"data.path={data}")
    assert code == 2 and err.startswith(f"error: {data}, row 2: not UTF-8 text")
    assert_nothing_written(tmp_path)


def test_a_missing_data_path_names_the_key(tmp_path, monkeypatch, capsys):
    code, err = run_main(tmp_path, monkeypatch, capsys, "data=medqa_5opt", "data.path=/no/such/medqa.jsonl")
    assert code == 2 and err == "error: data.path: no such file or folder: /no/such/medqa.jsonl"
    assert_nothing_written(tmp_path)


def test_a_checkpoint_whose_run_is_in_another_store_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    model = torch.nn.Linear(2, 1)
    folder = save_checkpoint(tmp_path / "out" / "checkpoints", 2, model, torch.optim.AdamW(model.parameters()),
                             run_id="feedface")  # written without a config: resumed unchecked
    code, err = run_main(tmp_path, monkeypatch, capsys, "resume=auto")
    assert code == 2 and err.startswith(
        f"error: logger.tracking_uri: the run of checkpoint {folder} (feedface) is not in the MLflow store"
        f" sqlite:///{tmp_path / 'mlflow.db'} ("
    )
    assert err.endswith("resume with the tracking URI the run was started with")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
