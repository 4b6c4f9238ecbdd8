"""Pictures logged at the end of a run: what each is computed from, and that they land in the run."""

from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from medrlvr.analysis.classifier import Stage
from medrlvr.training.figures import TrainingHistory, letter_choices, log_run_figures, sample_curves


def test_sample_curves_are_mean_score_accuracy_and_format_rate():
    samples = [
        {"score": 1.0, "letter": "A", "answer": "A", "format_error": None},
        {"score": 0.0, "letter": "B", "answer": "A", "format_error": None},
        {"score": -1.0, "letter": None, "answer": "C", "format_error": "missing_tags"},
        {"score": 1.0, "letter": "C", "answer": "C", "format_error": None},
    ]
    assert sample_curves(samples) == {"reward": 0.25, "accuracy": 0.5, "format rate": 0.75}


def test_history_keeps_rl_iterations_and_skips_sft_steps():
    history = TrainingHistory()
    scored = [{"score": 1.0, "letter": "A", "answer": "A", "format_error": None}]
    history.on_train_batch_end(None, SimpleNamespace(iteration=3, last_samples=scored), None, None, 0)
    sft = [{"iteration": 4, "id": "q1", "answer": "A", "response": "<think>x</think><answer>A</answer>"}]
    history.on_train_batch_end(None, SimpleNamespace(iteration=4, last_samples=sft), None, None, 1)
    assert history.curves == {3: {"reward": 1.0, "accuracy": 1.0, "format rate": 1.0}}


def test_letter_choices_count_every_letter_of_the_largest_option_count_and_none():
    records = [
        {"letter": "D", "answer": "A", "num_options": 4},
        {"letter": "D", "answer": "B", "num_options": 4},
        {"letter": None, "answer": "A", "num_options": 4},
        {"letter": "A", "answer": "A", "num_options": 4},
    ]
    assert letter_choices(records) == {"A": 0.25, "B": 0.0, "C": 0.0, "D": 0.5, "none": 0.25}


@pytest.fixture
def run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("figures", artifact_location=str(tmp_path / "artifacts"))
    return client, client.create_run(experiment).info.run_id


@pytest.mark.slow  # creating the MLflow store takes about 10 s
def test_the_run_gets_each_picture_it_has_data_for(run):
    client, run_id = run
    stages = {i: {s: 1.0 if s == Stage.FORMAT_FAILURE else 0.0 for s in Stage} for i in (1, 2, 3)}
    curves = {i: {"reward": 0.1 * i, "accuracy": 0.2, "format rate": 0.5} for i in (1, 2, 3)}
    records = [{"letter": "A", "answer": "A", "num_options": 2}, {"letter": None, "answer": "B", "num_options": 2}]
    evaluations = {"bundled_validation": {"before": records, "after": records}, "bundled_ood": {"before": records}}
    paths = log_run_figures(client, run_id, curves, stages, evaluations, boundary_min_iterations=2)
    expected = ["stage_fractions", "training_curves", "answer_letters_bundled_validation", "answer_letters_bundled_ood"]
    assert paths == [f"figures/{name}.png" for name in expected]
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == set(paths)
    assert all(a.file_size > 5000 for a in client.list_artifacts(run_id, "figures"))


@pytest.mark.slow
def test_a_run_without_iterations_or_evaluations_gets_no_picture(run):
    client, run_id = run
    assert log_run_figures(client, run_id, {}, {}, {}, boundary_min_iterations=2) == []
    assert client.list_artifacts(run_id) == []
