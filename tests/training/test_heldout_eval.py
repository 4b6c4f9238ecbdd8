"""Training's held-out evaluation sets (the eval split, the OOD split with ``trainer.eval_ood`` and ``data.eval_sets``,
as published) and the steps they are evaluated at."""

from types import SimpleNamespace

from medrlvr.analysis.dynamics import StageTracker
from medrlvr.config import AnalysisConfig, DataConfig, SFTConfig, TrainConfig, TrainerConfig
from medrlvr.data.registry import load_split
from medrlvr.training import heldout_eval
from medrlvr.training.heldout_eval import EvaluateDuringTraining, evaluation_sets


def test_eval_split_alone_by_default_and_the_ood_split_on_request():
    data = DataConfig(name="bundled", ood_split="ood", eval_size=5)
    plain = evaluation_sets(TrainConfig(algo=SFTConfig(), data=data))
    assert list(plain) == ["bundled_validation"] and [len(e.options) for e in plain["bundled_validation"]] == [5] * 5
    both = evaluation_sets(TrainConfig(algo=SFTConfig(), data=data, trainer=TrainerConfig(eval_ood=True)))
    assert list(both) == ["bundled_validation", "bundled_ood"] and both["bundled_validation"] == plain["bundled_validation"]
    assert [len(e.options) for e in both["bundled_ood"]] == [10] * 5 and both["bundled_ood"][0].id == "bundled-ood-0001"


def test_eval_sets_are_evaluated_on_their_test_split_after_the_others():
    data = DataConfig(name="bundled", eval_size=3, eval_sets={"bundled_ood": {"test_split": "test"}})
    sets = evaluation_sets(TrainConfig(algo=SFTConfig(), data=data))
    assert list(sets) == ["bundled_validation", "bundled_ood"] and len(sets["bundled_ood"]) == 3
    assert sets["bundled_ood"][0].id.startswith("bundled-test-")
    assert sets["bundled_validation"][0].id.startswith("bundled-validation-")


def test_empty_sets_are_left_out():
    assert evaluation_sets(TrainConfig(algo=SFTConfig(), data=DataConfig(eval_size=0))) == {}


def test_option_count_changes_the_training_questions_only():
    data = DataConfig(name="bundled", ood_split="ood", eval_size=5)
    trainer = TrainerConfig(eval_ood=True)
    published = evaluation_sets(TrainConfig(algo=SFTConfig(), data=data, trainer=trainer))
    for count in (4, 7):
        redrawn = DataConfig(name="bundled", ood_split="ood", eval_size=5, option_count=count)
        assert evaluation_sets(TrainConfig(algo=SFTConfig(), data=redrawn, trainer=trainer)) == published
        assert {len(example.options) for example in load_split(redrawn, "train")} == {count}


def test_evaluations_during_training_run_at_step_0_and_every_n_iterations_but_the_last(monkeypatch):
    calls = []
    def run_evaluation(name, *args):
        calls.append((name, args[-2]))
        return {}, [f"record of {name} at step {args[-2]}"]

    monkeypatch.setattr(heldout_eval, "run_evaluation", run_evaluation)
    sets = {"bundled_validation": [], "bundled_ood": []}
    trainer = SimpleNamespace(is_global_zero=True)
    for before, every, expected_steps in ((True, 2, [0, 2, 4]), (False, None, []), (False, 5, [])):
        calls.clear()
        callback = EvaluateDuringTraining(sets, None, None, None, before, every, 5, StageTracker(AnalysisConfig()))
        callback.on_train_start(trainer, SimpleNamespace(engine=None))
        for iteration in range(1, 6):  # the last step's evaluation runs after fit
            callback.on_train_batch_end(trainer, SimpleNamespace(engine=None, iteration=iteration), None, None, 0)
        assert calls == [(name, step) for step in expected_steps for name in sets]
        # the base model's completions are kept for the before/after answer-letter picture
        assert callback.before_records == ({name: [f"record of {name} at step 0"] for name in sets} if before else {})
    callback = EvaluateDuringTraining(sets, None, None, None, True, 1, 5, StageTracker(AnalysisConfig()))
    callback.on_train_start(SimpleNamespace(is_global_zero=False), SimpleNamespace(engine=None))
    other = SimpleNamespace(is_global_zero=False)
    callback.on_train_batch_end(other, SimpleNamespace(engine=None, iteration=1), None, None, 0)
    assert calls == []  # only the first process evaluates
