"""The training callback logs stage fractions, flags, lengths and example tables to a real MLflow store."""

import json
from types import SimpleNamespace

import mlflow
import pytest
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient

from medrlvr.analysis.callback import StageAnalysisCallback
from medrlvr.analysis.classifier import Stage
from medrlvr.config import AnalysisConfig

CONCISE = "<think>Small pale red cells with a low ferritin mean iron stores are empty, so B.</think><answer>B</answer>"
HACK = "<think>B</think><answer>B</answer>"


def samples(iteration, texts):
    return [
        {"iteration": iteration, "id": f"q{i}", "answer": "B", "letters": "ABCD", "response": t, "score": 0.0}
        for i, t in enumerate(texts)
    ]


def test_metrics_per_iteration_and_tables_when_due(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="callback", tracking_uri=uri, artifact_location=(tmp_path / "artifacts").as_uri())
    trainer = SimpleNamespace(logger=logger)
    callback = StageAnalysisCallback(AnalysisConfig(examples_per_stage=1), every=2, max_steps=3)
    batches = [[HACK, HACK, HACK, CONCISE], [CONCISE, "Iron.", HACK, HACK], [CONCISE, CONCISE, CONCISE, HACK]]
    for index, texts in enumerate(batches):
        module = SimpleNamespace(last_samples=samples(index + 1, texts), iteration=index + 1)
        callback.on_train_batch_end(trainer, module, None, None, index)

    client = MlflowClient(tracking_uri=uri)
    run_id = logger.run_id
    hacker = [(m.step, m.value) for m in client.get_metric_history(run_id, "stage/direct_answer_hacker")]
    assert sorted(hacker) == [(1, 0.75), (2, 0.5), (3, 0.25)]
    reintegrated = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "stage/reintegrated_reasoning"))
    assert reintegrated == [(1, 0.0), (2, 0.25), (3, 0.75)]  # the exploit phase starts at iteration 1
    for step in (1, 2, 3):
        assert sum(_metrics_at(client, run_id, step).values()) == pytest.approx(1.0)
    assert client.get_metric_history(run_id, "flag/short_reasoning")[0].value == 0.75
    assert len(client.get_metric_history(run_id, "length/reasoning_words_p90")) == 3

    tables = sorted(a.path for a in client.list_artifacts(run_id, "stages"))
    assert tables == ["stages/iteration_00001.json", "stages/iteration_00002.json", "stages/iteration_00003.json"]
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tables[1], tracking_uri=uri, dst_path=str(tmp_path))
    table = json.loads(open(path).read())
    rows = [dict(zip(table["columns"], values)) for values in table["data"]]
    assert [(r["stage"], r["id"]) for r in rows] == [(1, "q1"), (4, "q2"), (6, "q0")]


def _metrics_at(client, run_id, step):
    keys = [f"stage/{stage.slug}" for stage in Stage]
    return {key: next(m.value for m in client.get_metric_history(run_id, key) if m.step == step) for key in keys}


def test_callback_classifies_with_the_reward_rules():
    from medrlvr.rewards.parsing import ParseRules

    steps_first = "Steps.\n<think>Small pale cells, low ferritin: iron deficiency, so B.</think><answer>B</answer>"
    module = SimpleNamespace(last_samples=samples(1, [steps_first]), iteration=1)
    for rules, failure_share in ((ParseRules(), 1.0), (ParseRules(format="study"), 0.0)):
        logged = []
        trainer = SimpleNamespace(logger=SimpleNamespace(log_metrics=lambda metrics, step: logged.append(metrics)))
        StageAnalysisCallback(AnalysisConfig(), every=0, max_steps=1, rules=rules).on_train_batch_end(
            trainer, module, None, None, 0
        )
        assert logged[0]["stage/format_failure"] == failure_share


def test_callback_reads_option_texts_as_the_reward_does():
    from medrlvr.rewards.parsing import ParseRules

    by_text = "<think>Small pale cells, low ferritin: iron deficiency.</think><answer>Iron deficiency</answer>"
    sample = samples(1, [by_text])[0] | {"options": {"A": "Folate deficiency", "B": "Iron deficiency"}}
    module = SimpleNamespace(last_samples=[sample], iteration=1)
    logged = []
    trainer = SimpleNamespace(logger=SimpleNamespace(log_metrics=lambda metrics, step: logged.append(metrics)))
    rules = ParseRules(match_option_text=True)
    StageAnalysisCallback(AnalysisConfig(), every=0, max_steps=1, rules=rules).on_train_batch_end(
        trainer, module, None, None, 0
    )
    assert logged[0]["stage/format_failure"] == 0.0  # the reward accepts it: it names option B's text


def test_resumed_callback_keeps_the_exploit_phase_and_the_recent_lengths():
    trainer = SimpleNamespace(logger=None)
    first = StageAnalysisCallback(AnalysisConfig(), every=0, max_steps=2)
    first.on_train_batch_end(trainer, SimpleNamespace(last_samples=samples(1, [HACK, CONCISE]), iteration=1), None, None, 0)
    state = first.state_dict()
    assert state == {"exploit_phase_at": 1, "recent_lengths": [[1, 15]]}
    resumed = StageAnalysisCallback(AnalysisConfig(), every=0, max_steps=2)
    resumed.load_state_dict(state)
    assert resumed.tracker.exploit_phase_at == 1 and resumed.tracker.reference_words([30]) == 15.0
