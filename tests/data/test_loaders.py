"""Source loaders: each published schema from local files (JSONL, JSON, Parquet, CSV) and from hub rows,
the row errors naming file, row and field, and skipping bad rows on request."""

import csv
import json
import logging
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medrlvr.config import ConfigError, DataConfig
from medrlvr.data.registry import load_split, load_split_report
from medrlvr.data.schema import DatasetError

FIXTURES = Path(__file__).parents[1] / "fixtures"


def cfg(name, **kwargs):
    return DataConfig(name=name, **kwargs)


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def medqa_row(**overrides):
    row = {
        "question": "Which vitamin deficiency causes scurvy?",
        "answer": "Vitamin C",
        "options": {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D", "D": "Vitamin K"},
        "meta_info": "step1",
        "answer_idx": "B",
    }
    return {**row, **overrides}


# ---------------------------------------------------------------- MedQA


def test_medqa_folder_gives_each_split_with_its_variant():
    data = cfg("medqa", variant="5_options", path=str(FIXTURES / "medqa_5opt"))
    train, dev, test = (load_split(data, split) for split in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (4, 1, 1)
    assert load_split(data, "validation") == dev  # validation is an alias of dev
    first = train[0]
    assert first.letters == "ABCDE" and first.answer == "A" and first.answer_text == "Hodgkin lymphoma"
    assert first.id == "1" and first.metadata == {"meta_info": "step1"}
    assert [e.answer for e in train] == ["A", "C", "E", "A"]


def test_medqa_4_option_release_names_and_metadata():
    data = cfg("medqa", variant="4_options", path=str(FIXTURES / "medqa_4opt"))
    train = load_split(data, "train")
    assert [e.answer for e in train] == ["A", "B"] and all(e.letters == "ABCD" for e in train)
    assert train[0].metadata["metamap_phrases"] == ["which", "electrolyte", "abnormality", "produces"]


def test_medqa_variant_checks_the_option_count():
    data = cfg("medqa", variant="4_options", path=str(FIXTURES / "medqa_5opt" / "train.jsonl"))
    with pytest.raises(DatasetError, match=r"train\.jsonl, row 1, field 'options': has 5 options but data\.variant expects 4"):
        load_split(data, "train")


def test_medqa_parquet_struct_and_csv_give_the_same_examples(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "medqa_4opt" / "phrases_no_exclude_train.jsonl").read_text().splitlines()]
    reference = load_split(cfg("medqa", variant="4_options", path=str(FIXTURES / "medqa_4opt")), "train")
    # A Parquet struct column that also has an E field (null here), as when 4- and 5-option rows are mixed.
    table = pa.Table.from_pylist([{**r, "options": {**r["options"], "E": None}} for r in rows])
    pq.write_table(table, tmp_path / "train.parquet")
    from_parquet = load_split(cfg("medqa", variant="4_options", path=str(tmp_path / "train.parquet")), "train")
    with (tmp_path / "train.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer", "options", "meta_info", "answer_idx"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(r[k]) if k == "options" else r[k] for k in writer.fieldnames})
    from_csv = load_split(cfg("medqa", variant="4_options", path=str(tmp_path / "train.csv")), "train")
    for loaded in (from_parquet, from_csv):
        assert [(e.question, e.options, e.answer) for e in loaded] == [(e.question, e.options, e.answer) for e in reference]
    assert from_csv[1].id == "3"  # CSV rows are numbered by line: the header is line 1


def test_medqa_json_array(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([medqa_row(), medqa_row(answer_idx="A", answer="Vitamin A")]))
    examples = load_split(cfg("medqa", path=str(path)), "test")
    assert [e.answer for e in examples] == ["B", "A"] and [e.id for e in examples] == ["1", "2"]


@pytest.mark.parametrize(
    "row, field, problem",
    [
        ({k: v for k, v in medqa_row().items() if k != "answer_idx"}, "answer_idx", "missing field"),
        ({k: v for k, v in medqa_row().items() if k != "question"}, "question", "missing field"),
        (medqa_row(answer_idx="E", answer=None), "answer_idx", "answer letter 'E' is not among the options"),
        (medqa_row(question="   "), "question", "empty question"),
        (medqa_row(options={"A": "x", "B": "", "C": "z"}, answer_idx="A", answer="x"), "options", "option B is empty"),
        (medqa_row(answer="Vitamin D"), "answer", "differs from option B"),
        (medqa_row(answer="A. Vitamin C"), "answer", "differs from option B"),  # another letter in front
        (medqa_row(answer="B. Vitamin C plus"), "answer", "differs from option B"),
        (medqa_row(options={"A": "x", "C": "y"}, answer_idx="A", answer="x"), "options", "must run A, B, C"),
        (medqa_row(answer_idx=1), "answer_idx", "must be an option letter"),
    ],
)
def test_medqa_bad_rows_name_file_row_and_field(tmp_path, row, field, problem):
    path = jsonl(tmp_path / "test.jsonl", [medqa_row(), row])
    with pytest.raises(DatasetError) as err:
        load_split(cfg("medqa", path=str(path)), "test")
    assert (err.value.source, err.value.row, err.value.field_name) == (str(path), 2, field)
    assert problem in str(err.value) and str(path) in str(err.value) and "row 2" in str(err.value)


@pytest.mark.parametrize("answer", ["B. Vitamin C\n", "(B) Vitamin C", "B: vitamin  C", "B) Vitamin C", " Vitamin C\n"])
def test_medqa_answer_text_in_another_format_of_the_same_option_is_accepted(tmp_path, answer):
    path = jsonl(tmp_path / "test.jsonl", [medqa_row(answer=answer)])
    (example,) = load_split(cfg("medqa", path=str(path)), "test")
    assert example.answer == "B" and example.options["B"] == "Vitamin C"


def test_medqa_duplicate_option_letters_are_caught_although_json_would_drop_one(tmp_path):
    bad = '{"question": "Q?", "options": {"A": "x", "B": "y", "A": "z"}, "answer_idx": "A"}'
    path = jsonl(tmp_path / "test.jsonl", [medqa_row(), medqa_row(), bad])
    with pytest.raises(DatasetError, match=r"row 3, field 'options': duplicate option letters \['A'\]"):
        load_split(cfg("medqa", path=str(path)), "test")


def test_invalid_json_line_names_the_line(tmp_path):
    path = jsonl(tmp_path / "test.jsonl", [medqa_row(), '{"question": "unterminated'])
    with pytest.raises(DatasetError, match=r"row 2: invalid JSON"):
        load_split(cfg("medqa", path=str(path)), "test")


def test_skip_invalid_rows_reports_count_and_ids(tmp_path, caplog):
    rows = [medqa_row(id="q1"), medqa_row(id="q2", question=""), medqa_row(id="q3"), medqa_row(answer_idx="Z", answer=None)]
    path = jsonl(tmp_path / "test.jsonl", rows)
    data = cfg("medqa", path=str(path), skip_invalid_rows=True)
    with caplog.at_level(logging.WARNING):
        loaded = load_split_report(data, "test")
    assert [e.id for e in loaded.examples] == ["q1", "q3"]
    assert [(s.row, s.id) for s in loaded.skipped] == [(2, "q2"), (4, "row 4")]
    assert "empty question" in loaded.skipped[0].error
    assert "skipped 2 invalid row(s)" in caplog.text and "q2, row 4" in caplog.text


def test_folder_without_the_split_lists_what_it_holds():
    with pytest.raises(DatasetError, match=r"no .* file for split 'validation'.*phrases_no_exclude_test\.jsonl"):
        load_split(cfg("medqa", path=str(FIXTURES / "medqa_4opt")), "validation")


def test_unknown_variant_and_missing_path_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match="data.variant: '6_options' is not a variant of medqa"):
        load_split(cfg("medqa", variant="6_options", path=str(FIXTURES / "medqa_5opt")), "test")
    with pytest.raises(ConfigError, match="data.path: no such file or folder"):
        load_split(cfg("medqa", path="/nonexistent/medqa"), "test")
    with pytest.raises(ConfigError, match="data.name=medqa data.variant=5_options has no default hub dataset"):
        load_split(cfg("medqa", variant="5_options"), "test")


# ---------------------------------------------------------------- MMLU-Pro


def test_mmlu_pro_keeps_health_rows_with_up_to_ten_options():
    examples = load_split(cfg("mmlu_pro_health", path=str(FIXTURES / "mmlu_pro")), "test")
    assert [e.id for e in examples] == ["7001", "7002", "7003", "7005"]  # 7004 is a law question
    assert [len(e.options) for e in examples] == [10, 4, 7, 10]
    assert examples[0].letters == "ABCDEFGHIJ" and examples[0].answer == "B"
    assert examples[3].answer == "J" and examples[3].answer_text == "Red blood cells"
    assert examples[0].metadata == {"category": "health", "src": "ori_mmlu-clinical_knowledge", "cot_content": ""}


def mmlu_row(**overrides):
    row = {"question_id": 1, "question": "Which organ produces insulin?", "options": ["Liver", "Pancreas", "Spleen"],
           "answer": "B", "answer_index": 1, "cot_content": "", "category": "health", "src": "x"}
    return {**row, **overrides}


@pytest.mark.parametrize(
    "row, field, problem",
    [
        (mmlu_row(answer="C"), "answer", "disagrees with answer_index 1"),
        (mmlu_row(answer_index=3, answer=None), "answer_index", "outside the 3 options"),
        (mmlu_row(answer="D", answer_index=None), "answer", "answer letter 'D' is not among the options"),
        (mmlu_row(answer=None, answer_index=None), "answer", "missing field"),
        (mmlu_row(options=[f"o{i}" for i in range(11)]), "options", "has 11 options; at most 10"),
        (mmlu_row(options="Liver"), "options", "must be a list"),
        ({k: v for k, v in mmlu_row().items() if k != "category"}, "category", "missing field"),
        (mmlu_row(question=""), "question", "empty question"),
    ],
)
def test_mmlu_pro_bad_rows(tmp_path, row, field, problem):
    path = jsonl(tmp_path / "test.jsonl", [mmlu_row(), row])
    with pytest.raises(DatasetError) as err:
        load_split(cfg("mmlu_pro_health", path=str(path)), "test")
    assert (err.value.row, err.value.field_name) == (2, field) and problem in str(err.value)


def test_mmlu_pro_csv_with_options_as_python_list_text(tmp_path):
    path = tmp_path / "test.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(mmlu_row()))
        writer.writeheader()
        writer.writerow({**mmlu_row(), "options": str(["Liver", "Pancreas", "Spleen"])})
    (example,) = load_split(cfg("mmlu_pro_health", path=str(path)), "test")
    assert example.options == {"A": "Liver", "B": "Pancreas", "C": "Spleen"} and example.answer == "B"


# ---------------------------------------------------------------- MedMCQA


def test_medmcqa_original_release_counts_cop_from_one():
    examples = load_split(cfg("medmcqa", path=str(FIXTURES / "medmcqa")), "validation")
    assert [e.answer for e in examples] == ["B", "A", "D", "B"]
    assert examples[0].answer_text == "Phrenic nerve" and examples[0].id == "mc-0001"
    assert examples[0].metadata["subject_name"] == "Anatomy" and examples[0].metadata["exp"].startswith("The phrenic")


def medmcqa_rows(base):
    rows = [json.loads(line) for line in (FIXTURES / "medmcqa" / "dev.json").read_text().splitlines()]
    return [{**r, "cop": r["cop"] - 1 + base} for r in rows]


def test_medmcqa_hub_rows_count_cop_from_zero(monkeypatch):
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(medmcqa_rows(0))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_split(cfg("medmcqa"), "dev")
    assert calls == [("openlifescienceai/medmcqa", None, "validation")]
    assert [e.answer for e in examples] == ["B", "A", "D", "B"]
    assert examples[0].source == "openlifescienceai/medmcqa[validation]"


def test_medmcqa_parquet_zero_based_is_recognised_from_the_file(tmp_path):
    pq.write_table(pa.Table.from_pylist(medmcqa_rows(0)), tmp_path / "validation-00000-of-00001.parquet")
    examples = load_split(cfg("medmcqa", path=str(tmp_path)), "validation")
    assert [e.answer for e in examples] == ["B", "A", "D", "B"]


def test_medmcqa_ambiguous_base_asks_for_the_setting(tmp_path):
    rows = [r for r in medmcqa_rows(1) if r["cop"] in (1, 2, 3)]
    path = jsonl(tmp_path / "dev.json", rows)
    with pytest.raises(DatasetError, match=r"field 'cop': cannot tell .* set data.answer_index_base=0 or 1"):
        load_split(cfg("medmcqa", path=str(path)), "validation")
    explicit = load_split(cfg("medmcqa", path=str(path), answer_index_base=0), "validation")
    assert [e.answer for e in explicit] == ["C", "B", "C"]


@pytest.mark.parametrize(
    "change, field, problem",
    [
        ({"cop": 5}, "cop", "5 is outside 1..4"),
        ({"cop": "b"}, "cop", "must be an integer"),
        ({"cop": -1}, "cop", "no answer (-1)"),
        ({"opc": None}, "opc", "missing field"),
        ({"opd": " "}, "options", "option D is empty"),
        ({"question": ""}, "question", "empty question"),
    ],
)
def test_medmcqa_bad_rows(tmp_path, change, field, problem):
    rows = medmcqa_rows(1)
    rows[1] = {**rows[1], **change}
    path = jsonl(tmp_path / "dev.json", rows)
    with pytest.raises(DatasetError) as err:
        load_split(cfg("medmcqa", path=str(path), answer_index_base=1), "validation")
    assert (err.value.row, err.value.field_name) == (2, field) and problem in str(err.value)


def test_hub_failure_says_to_use_a_local_path(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match=r"TIGER-Lab/MMLU-Pro\[test\].*ConnectionError.*set data.path"):
        load_split(cfg("mmlu_pro_health"), "test")


def test_option_count_transform_applies_to_sources():
    examples = load_split(cfg("mmlu_pro_health", path=str(FIXTURES / "mmlu_pro"), option_count=4), "test", seed=3)
    assert all(e.letters == "ABCD" for e in examples)
    originals = load_split(cfg("mmlu_pro_health", path=str(FIXTURES / "mmlu_pro")), "test")
    assert [e.answer_text for e in examples] == [e.answer_text for e in originals]


def test_bundled_refuses_a_path():
    with pytest.raises(ValueError, match="do not apply to data=bundled"):
        load_split(cfg("bundled", path="x.jsonl"), "test")


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    good = '{"question": "Q?", "options": {"A": "v", "B": "w", "C": "x", "D": "y", "E": "z"}, "answer_idx": "A"}'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((good + "\n" + good.replace("Q?", "Caf\xe9?") + "\n").encode("latin-1"))
    with pytest.raises(DatasetError, match=rf"^{path}, row 2: not UTF-8 text \(invalid continuation byte\)"):
        load_split(cfg("medqa", path=str(path)), "test")


def test_bundled_data_with_a_path_is_a_config_error():
    with pytest.raises(ConfigError, match="data.path/hub_name/variant do not apply to data=bundled"):
        load_split(cfg("bundled", path="/some/file.jsonl"), "train")
