"""Stages over iterations: history (stage 6), per-iteration metrics, dominant stages and boundaries."""

import pytest

from medrlvr.analysis.classifier import Stage, classify
from medrlvr.analysis.dynamics import (
    StageTracker,
    dominant_stage,
    example_rows,
    flag_shares,
    format_kind_shares,
    iteration_metrics,
    length_stats,
    seen_in_study_order,
    stage_phases,
    stage_sightings,
)
from medrlvr.config import AnalysisConfig

CFG = AnalysisConfig()
CONCISE = "<think>Small pale red cells with a low ferritin mean iron stores are empty, so B.</think><answer>B</answer>"
HACK = "<think>B</think><answer>B</answer>"
FAIL = "Iron."


def test_tracker_labels_concise_reasoning_6_only_after_an_exploit_phase():
    tracker = StageTracker(AnalysisConfig(exploit_phase_fraction=0.5))
    first = tracker.classify_iteration(1, [(CONCISE, "ABCDE"), (HACK, "ABCDE"), (FAIL, "ABCDE"), (FAIL, "ABCDE")])
    assert [a.stage for a in first] == [Stage.CONCISE_STRUCTURER, Stage.DIRECT_ANSWER_HACKER] + [Stage.FORMAT_FAILURE] * 2
    assert tracker.exploit_phase_at is None  # 1 of 4 in an exploit stage < 0.5
    second = tracker.classify_iteration(2, [(CONCISE, "ABCDE"), (HACK, "ABCDE"), (HACK, "ABCDE"), (FAIL, "ABCDE")])
    assert second[0].stage == Stage.CONCISE_STRUCTURER  # the phase counts from the next iteration on
    assert tracker.exploit_phase_at == 2
    third = tracker.classify_iteration(3, [(CONCISE, "ABCDE"), (HACK, "ABCDE")])
    assert [a.stage for a in third] == [Stage.REINTEGRATED_REASONING, Stage.DIRECT_ANSWER_HACKER]
    tracker.classify_iteration(4, [(FAIL, "ABCDE")])
    assert tracker.exploit_phase_at == 2


def test_length_stats_hand_computed():
    assert length_stats([1, 2, 3, 4]) == pytest.approx({"mean": 2.5, "p50": 2.5, "p90": 3.7})
    assert length_stats([]) == {"mean": 0.0, "p50": 0.0, "p90": 0.0}


def test_iteration_metrics_hand_computed():
    analyses = [classify(t, "ABCDE", CFG) for t in (CONCISE, HACK, HACK, FAIL)]
    metrics = iteration_metrics(analyses)
    stages = {k: v for k, v in metrics.items() if k.startswith("stage/")}
    assert len(stages) == 6 and sum(stages.values()) == pytest.approx(1.0)
    assert metrics["stage/direct_answer_hacker"] == 0.5
    assert metrics["stage/concise_structurer"] == metrics["stage/format_failure"] == 0.25
    assert metrics["stage/reintegrated_reasoning"] == 0.0
    assert metrics["flag/short_reasoning"] == 0.5
    assert "flag/format_failure" not in metrics  # it is 1 - reward/format_rate, logged by the training module
    assert not any(key.startswith("format_kind/") for key in metrics)
    assert flag_shares(analyses)["format_failure"] == 0.25
    kinds = format_kind_shares(analyses)
    assert kinds["missing_tags"] == 0.25 and kinds["no_answer"] == 0.0
    # reasoning words: 15, 1, 1, 0 (no think block)
    assert metrics["length/reasoning_words_mean"] == pytest.approx(17 / 4)
    assert metrics["length/reasoning_words_p50"] == pytest.approx(1.0)
    assert metrics["length/reasoning_words_p90"] == pytest.approx(1 + 0.7 * 14)
    # response words (tags removed, the answer letter included): 16, 2, 2, 1
    assert metrics["length/response_words_mean"] == pytest.approx(21 / 4)
    assert metrics["aha/phrases_mean"] == 0.0


def test_dominant_stage_ties_go_to_the_lower_stage():
    fractions = {s: 0.0 for s in Stage} | {Stage.DIRECT_ANSWER_HACKER: 0.4, Stage.CONCISE_STRUCTURER: 0.4}
    assert dominant_stage(fractions) == Stage.CONCISE_STRUCTURER


def test_stage_phases_need_a_streak_of_min_iterations():
    S = Stage
    dominant = [S(1), S(1), S(2), S(2), S(2), S(4), S(2), S(2), S(4), S(4), S(4), S(6), S(6)]
    iterations = list(range(1, 14))
    assert stage_phases(iterations, dominant, 3) == [(1, S(1)), (3, S(2)), (9, S(4))]
    assert stage_phases(iterations, dominant, 1) == [
        (1, S(1)), (3, S(2)), (6, S(4)), (7, S(2)), (9, S(4)), (12, S(6))
    ]
    assert stage_phases([5], [S(3)], 3) == [(5, S(3))]
    with pytest.raises(ValueError, match="2 iterations but 1"):
        stage_phases([1, 2], [S(1)], 1)


def test_example_rows_keep_per_stage_limit_stage_order_and_distinct_responses():
    texts = [HACK, FAIL, HACK, CONCISE, "<think>E</think><answer>E</answer>", HACK, "<think>C</think><answer>C</answer>"]
    samples = [{"response": t, "id": f"q{i}", "iteration": 7, "answer": "B"} for i, t in enumerate(texts)]
    analyses = [classify(s["response"], "ABCDE", CFG) for s in samples]
    rows = example_rows(samples, analyses, per_stage=2)
    assert [(r["stage"], r["id"]) for r in rows] == [(1, "q1"), (3, "q3"), (4, "q0"), (4, "q4")]
    assert rows[2]["flags"] == "short_reasoning,answer_in_reasoning" and rows[2]["letter"] == "B"
    assert rows[2]["stage_name"] == "4 Direct Answer Hacker" and rows[2]["iteration"] == 7


def test_a_minority_exploit_phase_counts_by_default():
    tracker = StageTracker(CFG)  # exploit_phase_fraction 0.25
    tracker.classify_iteration(1, [(CONCISE, "ABCDE"), (CONCISE, "ABCDE"), (CONCISE, "ABCDE"), (HACK, "ABCDE")])
    assert tracker.exploit_phase_at == 1  # 1 of 4 completions in stage 4
    assert tracker.classify_iteration(2, [(CONCISE, "ABCDE")])[0].stage == Stage.REINTEGRATED_REASONING


def test_reference_length_is_the_median_over_the_recent_iterations_window():
    tracker = StageTracker(AnalysisConfig(reference_iterations=2))
    words = lambda n: "<think>" + " ".join(["word"] * n) + "</think><answer>B</answer>"  # noqa: E731
    assert tracker.reference_words([4, 10]) == 7.0
    tracker.classify_iteration(1, [(words(40), "ABCDE"), (words(60), "ABCDE"), (FAIL, "ABCDE")])  # FAIL: no think
    assert list(tracker.recent_lengths) == [[40, 60]]
    assert tracker.reference_words([10]) == 40.0  # median of 40, 60, 10
    # iteration 2: reference = median(40, 60, 20, 22) = 31 and 20 > 0.5 * 31
    second = tracker.classify_iteration(2, [(words(20), "ABCDE"), (words(22), "ABCDE")])
    assert [a.short_reasoning for a in second] == [False, False]
    assert list(tracker.recent_lengths) == [[20, 22]]  # the window keeps 2 iterations: the previous one and the next
    third = tracker.classify_iteration(3, [(words(8), "ABCDE"), (words(30), "ABCDE")])
    # reference = median(20, 22, 8, 30) = 21; 8 <= 10.5 -> shortened
    assert [a.short_reasoning for a in third] == [True, False]


def _fractions(**shares: list[float]) -> dict[Stage, list[float]]:
    n = len(next(iter(shares.values())))
    return {stage: shares.get(stage.slug, [0.0] * n) for stage in Stage}


def test_stage_sightings_first_iteration_at_the_share_and_peak_hand_computed():
    fractions = _fractions(
        format_failure=[0.9, 0.6, 0.2, 0.1],
        concise_structurer=[0.1, 0.3, 0.5, 0.3],
        direct_answer_hacker=[0.0, 0.05, 0.3, 0.3],
        reintegrated_reasoning=[0.0, 0.05, 0.0, 0.3],
    )
    sightings = {s.stage: s for s in stage_sightings([1, 2, 3, 4], fractions, seen_fraction=0.1)}
    assert (sightings[Stage.FORMAT_FAILURE].first_seen, sightings[Stage.FORMAT_FAILURE].peak_share) == (1, 0.9)
    assert sightings[Stage.CONCISE_STRUCTURER].first_seen == 1  # 0.1 reaches the share (>=)
    assert (sightings[Stage.CONCISE_STRUCTURER].peak_share, sightings[Stage.CONCISE_STRUCTURER].peak_iteration) == (0.5, 3)
    assert sightings[Stage.DIRECT_ANSWER_HACKER].first_seen == 3  # 0.05 at iteration 2 is below the share
    assert sightings[Stage.DIRECT_ANSWER_HACKER].peak_iteration == 3  # a tied peak: its first iteration
    assert sightings[Stage.REINTEGRATED_REASONING].first_seen == 4
    assert sightings[Stage.VERBOSE_FORMATTER].first_seen is None
    assert sightings[Stage.VERBOSE_FORMATTER].peak_share == 0.0
    assert seen_in_study_order(list(sightings.values()))  # 1 and 3 together, then 4, then 6


def test_study_order_fails_when_a_later_stage_is_seen_first():
    hacker_first = _fractions(format_failure=[1.0, 0.5, 0.5], direct_answer_hacker=[0.0, 0.5, 0.0], concise_structurer=[0.0, 0.0, 0.5])
    assert not seen_in_study_order(stage_sightings([1, 2, 3], hacker_first, seen_fraction=0.1))
    with pytest.raises(ValueError, match="3 iterations but 2 shares"):
        stage_sightings([1, 2, 3], _fractions(format_failure=[1.0, 1.0]), seen_fraction=0.1)
