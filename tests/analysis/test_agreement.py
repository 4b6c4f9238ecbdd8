"""Agreement with hand labels: the confusion-matrix arithmetic, the labelled set's shape, and the measured floor."""

import json
from collections import Counter
from pathlib import Path

import pytest

from medrlvr.analysis.agreement import Agreement, agreement_report, classify_labelled, load_labelled
from medrlvr.analysis.classifier import Stage
from medrlvr.config import AnalysisConfig
from medrlvr.data.schema import DatasetError

LABELLED = Path(__file__).parent / "data" / "labelled_stages.jsonl"


def test_precision_recall_and_macro_f1_hand_computed():
    agreement = Agreement.of([1, 1, 2, 3, 4], [1, 2, 2, 3, 3])
    assert agreement.matrix[0][:4] == [1, 1, 0, 0] and agreement.matrix[3][:4] == [0, 0, 1, 0]
    assert (agreement.precision(Stage(1)), agreement.recall(Stage(1))) == (1.0, 0.5)
    assert (agreement.precision(Stage(2)), agreement.recall(Stage(2))) == (0.5, 1.0)
    assert (agreement.precision(Stage(3)), agreement.recall(Stage(3))) == (0.5, 1.0)
    assert agreement.f1(Stage(4)) == 0.0 and agreement.f1(Stage(5)) == 0.0  # 5 never labelled nor classified
    # F1: stage 1 = 2/3, stages 2 and 3 = 2/3, others 0 -> macro = 2/6
    assert agreement.macro_f1() == pytest.approx(2 / 6)
    assert agreement.accuracy() == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        Agreement.of([1, 2], [1])


def test_the_labelled_set_has_every_stage_in_both_halves():
    rows = load_labelled(LABELLED)
    assert len(rows) >= 120
    counts = Counter((row["stage"], row["split"]) for row in rows)
    assert all(counts[(stage, split)] >= 8 for stage in range(1, 7) for split in ("tune", "report"))
    assert all(sum(counts[(stage, s)] for s in ("tune", "report")) >= 15 for stage in range(1, 7))
    assert len({row["id"] for row in rows}) == len(rows)


def test_classifier_agreement_on_the_report_half_stays_above_the_measured_value():
    # measured with the tuned defaults: macro-F1 0.952 (59 of 62 report rows), README "Training dynamics"
    agreement, text = agreement_report(LABELLED, "report", AnalysisConfig())
    assert agreement.macro_f1() >= 0.93
    assert "Confusion matrix" in text and "| 4 Direct Answer Hacker | 11 |" in text


def test_the_thresholds_matter_on_the_labelled_set():
    rows = [row for row in load_labelled(LABELLED) if row["split"] == "report"]
    fixed = AnalysisConfig(verbose_reasoning_words=200)  # no completion verbose: stage 2 is never found
    predicted = [int(a.stage) for a in classify_labelled(rows, fixed)]
    assert Agreement.of([row["stage"] for row in rows], predicted).recall(Stage.VERBOSE_FORMATTER) == 0.0


@pytest.mark.parametrize(
    "change, key",
    [
        ({"stage": 7}, "stage"),
        ({"stage": True}, "stage"),
        ({"split": "test"}, "split"),
        ({"flags": ["repetition"]}, "flags"),
        ({"reference_words": 0}, "reference_words"),
        ({"after_exploit": "yes"}, "after_exploit"),
    ],
)
def test_a_bad_labelled_row_fails_naming_row_and_key(tmp_path, change, key):
    good = json.loads(LABELLED.read_text().splitlines()[0])
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | change) + "\n")
    with pytest.raises(DatasetError, match=rf"labels.jsonl, row 2, field '{key}'"):
        load_labelled(path)


def test_cli_prints_the_confusion_matrix(capsys):
    from medrlvr.analyze import main

    assert main([str(LABELLED), "--agreement", "--split", "tune"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("63 labelled completions (tune)") and "| 1 format_failure | 11 |" in out
