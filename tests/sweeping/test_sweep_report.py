"""The report keeps the best trial's test numbers apart from the table the trials are compared by."""

from medrlvr.sweeping.sweep_report import Sweep, Trial, best_trial_test, held_out_metrics, table

METRICS = {
    "eval/bundled_validation/accuracy": 0.5,
    "eval/bundled_ood/accuracy": 0.25,
    "eval/bundled_ood/format_rate": 0.75,
    "eval/mmlu_pro_health/accuracy": 0.125,
    "eval/bundled_ood/reasoning_words": 12.0,
    "reward/mean": 0.1,
}


def trial(number, objective, metrics):
    return Trial(
        number=number, run_id=f"run{number}", status="FINISHED", params={"algo.kl_coef": str(number / 10)},
        objective=objective, metrics={k: v for k, v in metrics.items() if k == "eval/bundled_validation/accuracy"},
        test_metrics=held_out_metrics(metrics, "bundled_validation"), minutes=1.0, error="",
    )


def sweep(*trials):
    return Sweep(
        parent_run_id="p", experiment_name="sweep-kl_coef", name="kl_coef", kind="grid", objective="return_value",
        direction="maximize", params=["algo.kl_coef"], trials=list(trials), tags={},
    )


def test_test_metrics_are_the_held_out_sets_accuracy_and_format_rate():
    assert held_out_metrics(METRICS, "bundled_validation") == {
        "eval/bundled_ood/accuracy": 0.25, "eval/bundled_ood/format_rate": 0.75, "eval/mmlu_pro_health/accuracy": 0.125
    }


def test_best_trial_test_numbers_are_reported_apart_from_the_trials_table():
    best, other = trial(1, 0.5, METRICS), trial(0, 0.25, {**METRICS, "eval/bundled_ood/accuracy": 0.9})
    report = sweep(best, other)
    text = best_trial_test(report)
    assert text.splitlines()[0] == "Best trial #1 (run run1): objective (return value) 0.5; algo.kl_coef=0.1"
    assert "| eval/bundled_ood/accuracy | 0.25 |" in text and "0.9" not in text and "reasoning_words" not in text
    header, _ = table(report)
    assert "eval/bundled_validation/accuracy" in header and not any("_ood" in column for column in header)


def test_a_best_trial_without_test_metrics_says_how_to_get_them():
    text = best_trial_test(sweep(trial(0, 0.5, {"eval/bundled_validation/accuracy": 0.5})))
    assert "no test-set metrics (train with trainer.eval_ood=true" in text
    assert best_trial_test(sweep()) == "No completed trial.\n"


def test_equal_objectives_are_said_and_get_no_importance_plot(tmp_path, capsys):
    from dataclasses import replace

    from medrlvr.sweeping.sweep_report import plot_importances

    flat = replace(sweep(trial(0, 0.25, METRICS), trial(1, 0.25, METRICS)), kind="optuna")
    assert flat.all_equal and not sweep(trial(0, 0.25, METRICS), trial(1, 0.5, METRICS)).all_equal
    assert not sweep(trial(0, 0.25, METRICS)).all_equal  # one trial: nothing to compare
    assert plot_importances(flat, tmp_path) is None  # returns before opening any Optuna study
    assert "every completed trial scored 0.25" in capsys.readouterr().out


def test_cli_names_a_missing_experiment_or_run_in_one_line(tmp_path, capsys):
    import pytest

    from medrlvr.report import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for argv in (["typo", "--tracking-uri", uri], ["typo", "--tracking-uri", uri, "--parent", "0123abcd"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own log lines
        assert err.startswith("error: ")
        assert "typo" in err or "0123abcd" in err
