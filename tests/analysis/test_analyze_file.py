"""`python -m medrlvr.analyze <file>`: reading completion files, clear errors, report and chart of a file."""

import json

import pytest

from medrlvr.analysis.io import load_completions, read_rows
from medrlvr.analysis.stage_analysis import config_from
from medrlvr.analyze import main
from medrlvr.config import ConfigError
from medrlvr.data.schema import DatasetError

CONCISE = "<think>Small pale red cells with a low ferritin mean iron stores are empty, so B.</think><answer>B</answer>"
HACK = "<think>B</think><answer>B</answer>"
STEPS = "<think>Step 1: the cells are small. Step 2: ferritin is low.\n<think>B</think><answer>B</answer>"


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_mlflow_tables_lists_and_jsonl(tmp_path):
    table = tmp_path / "before.json"
    table.write_text(json.dumps({"columns": ["id", "response"], "data": [["q1", HACK], ["q2", CONCISE]]}))
    assert read_rows(table) == [{"id": "q1", "response": HACK}, {"id": "q2", "response": CONCISE}]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"response": HACK}]))
    assert read_rows(listed) == [{"response": HACK}]
    lines = write_jsonl(tmp_path / "c.jsonl", [{"response": HACK, "letters": "ABC"}, {"response": STEPS}])
    rows = load_completions(lines, default_letters="ABCD")
    assert [r["letters"] for r in rows] == ["ABC", "ABCD"]


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.jsonl", '{"response": "x"}\n{oops\n', r"bad.jsonl, row 2: invalid JSON"),
        ("noresp.jsonl", '{"response": "x"}\n{"text": "y"}\n', r"noresp.jsonl, row 2, field 'response'"),
        ("letters.jsonl", '{"response": "x", "letters": "AB1"}\n', r"row 1, field 'letters'"),
        ("options.jsonl", '{"response": "x", "letters": "AB", "options": {"C": "Iron"}}\n', r"row 1, field 'options'"),
        ("short.json", json.dumps({"columns": ["id", "response"], "data": [["q1"]]}), r"short.json, row 1, field 'data'"),
        ("scalar.json", "3", r"scalar.json: expected an MLflow table"),
        ("empty.jsonl", "\n", r"empty.jsonl: no completions"),
    ],
)
def test_bad_files_fail_naming_file_row_and_field(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_completions(path)


def test_config_overrides_from_params_and_cli():
    cfg = config_from({"analysis/short_reasoning_words": "12", "algo/kl_coef": "0.1"}, ["exploit_phase_fraction=0.5"])
    assert (cfg.short_reasoning_words, cfg.exploit_phase_fraction, cfg.verbose_reasoning_words) == (12, 0.5, 60)
    with pytest.raises(ConfigError, match="short_words"):
        config_from({}, ["short_words=3"])
    with pytest.raises(ConfigError, match="must be int"):
        config_from({}, ["short_reasoning_words=many"])
    with pytest.raises(ConfigError, match="analysis.verbose_reasoning_words"):
        config_from({}, ["verbose_reasoning_words=2"])


def test_file_report_chart_and_classified_rows(tmp_path, capsys):
    rows = [
        {"iteration": 1, "id": "q1", "answer": "B", "response": HACK},
        {"iteration": 1, "id": "q2", "answer": "B", "response": STEPS},
        {"iteration": 2, "id": "q3", "answer": "B", "response": CONCISE},
        {"iteration": 2, "id": "q4", "answer": "B", "response": "I do not know."},
    ]
    out = tmp_path / "out"
    assert main([str(write_jsonl(tmp_path / "samples.jsonl", rows)), "--output", str(out), "--letters", "ABCDE"]) == 0
    classified = [json.loads(line) for line in (out / "classified.jsonl").read_text().splitlines()]
    # iteration 1 is all exploit (stages 4 and 5), so the concise completion of iteration 2 is stage 6
    assert [(r["id"], r["stage"]) for r in classified] == [("q1", 4), ("q2", 5), ("q3", 6), ("q4", 1)]
    report = (out / "report.md").read_text()
    assert "| 6 Reintegrated Reasoning | 1 | 0.250 |" in report
    assert "| `reasoning_before_think` | 0.250 |" in report
    assert "### 5 Step-by-Step Exploit" in report and "Step 1: the cells are small" in report
    assert "### 2 Verbose Formatter\n\nNo example of this stage." in report
    assert (out / "stage_fractions.png").stat().st_size > 10_000
    assert "report:" in capsys.readouterr().out


def test_missing_file_or_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nothing.json")]) == 2
    assert "nothing.json: no such file" in capsys.readouterr().err
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["0123abcd", "--tracking-uri", uri]) == 2
    assert "'0123abcd' is neither a file nor a run" in capsys.readouterr().err


def test_file_read_with_the_study_format(tmp_path):
    short_before = "Iron.\n" + CONCISE
    path = write_jsonl(tmp_path / "samples.jsonl", [{"id": "q1", "response": short_before}])
    stages = {}
    for name in ("strict", "study"):
        out = tmp_path / name
        assert main([str(path), "--output", str(out), "--letters", "ABCDE", "--format", name]) == 0
        stages[name] = json.loads((out / "classified.jsonl").read_text())["stage"]
    assert stages == {"strict": 1, "study": 3}


def test_completion_tables_give_options_as_lines_and_their_letters(tmp_path):
    table = {
        "columns": ["response", "options"],
        "data": [
            ["<think>x</think><answer>B</answer>", "A. Iron\nB. Folate\nC. Zinc"],
            ["<think>y</think><answer>A</answer>", "A. E. coli infection\nB. Sepsis"],
        ],
    }
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(table))
    first, second = load_completions(path)
    assert first["options"] == {"A": "Iron", "B": "Folate", "C": "Zinc"} and first["letters"] == "ABC"
    assert second["options"] == {"A": "E. coli infection", "B": "Sepsis"} and second["letters"] == "AB"
    table["data"][1][1] = "A. Iron\nnot an option line"
    path.write_text(json.dumps(table))
    with pytest.raises(DatasetError, match=r"row 2, field 'options'"):
        load_completions(path)
