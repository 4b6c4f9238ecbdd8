"""The bundled dataset: its knowledge base, the generated splits and the committed JSONL files."""

import re
from collections import Counter

import pytest

from medrlvr.data.bundled import (
    ALL_SPLITS,
    BUNDLED_DIR,
    OOD_OPTION_COUNT,
    OOD_SPLIT,
    OOD_TEMPLATES,
    OPTION_COUNT,
    RELATIONS,
    SPLITS,
    generate_bundled,
    load_bundled,
    load_knowledge_base,
    write_bundled,
)
from medrlvr.data.medqa import load_medqa_jsonl
from medrlvr.data.schema import OPTION_LETTERS, validate_example


@pytest.fixture(scope="module")
def generated():
    return generate_bundled(0)


class FixedTemplate:
    """Stands in for the generator's random choice of template."""

    def __init__(self, template):
        self.template = template

    def choice(self, templates):
        return self.template


def all_examples(splits):
    return [example for split in SPLITS for example in splits[split]]


def test_knowledge_base_size_and_shape():
    assert 18 <= len(RELATIONS) <= 25
    assert 350 <= sum(len(relation.facts) for relation in RELATIONS) <= 500
    assert len({relation.name for relation in RELATIONS}) == len(RELATIONS)
    for relation in RELATIONS:
        subjects = [subject.casefold() for subject, _ in relation.facts]
        assert len(set(subjects)) == len(subjects), f"{relation.name}: a subject is asked about twice"
        assert len({answer.casefold() for _, answer in relation.facts}) >= OPTION_COUNT, relation.name
        assert all("{subject}" in template for template in relation.templates), relation.name


def test_knowledge_base_file_names_a_relation_missing_a_key(tmp_path):
    path = tmp_path / "kb.json"
    path.write_text('{"relations": [{"name": "a", "templates": ["{subject}?"], "facts": [["x", "y"]]}, {"name": "b"}]}')
    with pytest.raises(ValueError, match=r"kb\.json: relation 2 lacks facts, templates"):
        load_knowledge_base(path)


def test_regenerating_with_the_seed_gives_the_committed_files(tmp_path):
    paths = write_bundled(tmp_path, seed=0)
    assert [path.name for path in paths] == [f"{split}.jsonl" for split in ALL_SPLITS]
    for path in paths:
        committed = BUNDLED_DIR / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python -m medrlvr.data.bundled"


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_committed_files_load_and_equal_the_generated_examples(generated, split):
    loaded = load_bundled(split)
    assert loaded == generated[split]
    raw = load_medqa_jsonl(BUNDLED_DIR / f"{split}.jsonl")
    assert [row.metadata["meta_info"] for row in raw] == [ex.metadata for ex in loaded]


def test_every_example_validates_and_is_well_formed(generated):
    examples = all_examples(generated)
    for row, example in enumerate(examples, start=1):
        validate_example(example, "bundled", row)
        assert list(example.options) == list(OPTION_LETTERS[:OPTION_COUNT])
        assert example.source == "bundled"
        assert example.metadata["relation"] in {relation.name for relation in RELATIONS}
    ids = [example.id for example in examples]
    assert len(set(ids)) == len(ids)
    assert generated["train"][0].id == "bundled-train-0001"
    assert all(example.id.startswith(f"bundled-{split}-") for split in SPLITS for example in generated[split])


def test_size_and_proportions(generated):
    sizes = {split: len(generated[split]) for split in SPLITS}
    assert sum(sizes.values()) >= 300
    total = sum(sizes.values())
    assert 0.65 <= sizes["train"] / total <= 0.75
    for split in ("validation", "test"):
        assert 0.10 <= sizes[split] / total <= 0.20


def test_every_relation_appears_in_every_split(generated):
    names = {relation.name for relation in RELATIONS}
    for split in SPLITS:
        assert {example.metadata["relation"] for example in generated[split]} == names, split


def test_splits_are_disjoint_and_questions_unique(generated):
    questions = [example.question.casefold() for example in all_examples(generated)]
    assert len(set(questions)) == len(questions)


def test_answer_letters_are_roughly_uniform(generated):
    for split in SPLITS:
        counts = Counter(example.answer for example in generated[split])
        for letter in OPTION_LETTERS[:OPTION_COUNT]:
            share = counts[letter] / len(generated[split])
            assert 0.12 <= share <= 0.28, (split, letter, share)


def test_answers_are_right_and_options_distinct_answers_of_the_same_relation(generated):
    answers = {relation.name: {answer for _, answer in relation.facts} for relation in RELATIONS}
    correct = {
        (relation.name, relation.question(subject, FixedTemplate(template))): answer
        for relation in RELATIONS
        for template in relation.templates
        for subject, answer in relation.facts
    }
    for example in all_examples(generated):
        relation = example.metadata["relation"]
        assert example.answer_text == correct[relation, example.question], example.id
        assert set(example.options.values()) <= answers[relation], example.id
        texts = [text.casefold() for text in example.options.values()]
        assert len(set(texts)) == len(texts), example.id


def test_generation_is_deterministic_per_seed(generated):
    assert generate_bundled(0) == generated
    other = generate_bundled(1)
    assert {ex.question for ex in other["test"]} != {ex.question for ex in generated["test"]}
    assert [ex.answer for ex in other["train"]] != [ex.answer for ex in generated["train"]]
    assert [ex.question for ex in other[OOD_SPLIT]] != [ex.question for ex in generated[OOD_SPLIT]]


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ValueError, match="train, validation, test, ood"):
        load_bundled("dev")


def subject_of(relation, question):
    """The subject an in-distribution question asks about, read back through the relation's templates."""
    for template in relation.templates:
        pattern = re.escape(template).replace(re.escape("{subject}"), "(.+)")
        match = re.fullmatch(pattern, question, flags=re.IGNORECASE)
        if match:
            return match.group(1).casefold()
    raise AssertionError(f"{question!r} matches no template of {relation.name}")


def test_ood_split_has_ten_options_and_the_other_question_style(generated):
    ood = generated[OOD_SPLIT]
    assert 100 <= len(ood) <= 200
    for row, example in enumerate(ood, start=1):
        validate_example(example, "bundled ood", row)
        assert list(example.options) == list(OPTION_LETTERS[:OOD_OPTION_COUNT]) == list("ABCDEFGHIJ")
        assert "which of the following" in example.question.casefold(), example.question
        assert example.id == f"bundled-ood-{row:04d}" and example.source == "bundled"
    id_questions = [example.question.casefold() for example in all_examples(generated)]
    assert not any("of the following" in question for question in id_questions)
    counts = Counter(example.answer for example in ood)
    assert set(counts) == set("ABCDEFGHIJ") and max(counts.values()) - min(counts.values()) <= 1


def test_ood_questions_ask_held_out_facts_backwards_with_exactly_one_right_option(generated):
    relations = {relation.name: relation for relation in RELATIONS}
    held_out = {
        (example.metadata["relation"], subject_of(relations[example.metadata["relation"]], example.question))
        for split in ("validation", "test")
        for example in generated[split]
    }
    asked = set()
    for example in generated[OOD_SPLIT]:
        relation = relations[example.metadata["relation"]]
        answer_of = {subject.casefold(): answer.casefold() for subject, answer in relation.facts}
        answers = [
            answer for template in OOD_TEMPLATES[relation.name] for answer in dict.fromkeys(a for _, a in relation.facts)
            if template.format(answer=answer) == example.question
        ]
        assert len(answers) == 1, example.question
        right = [letter for letter, text in example.options.items() if answer_of[text.casefold()] == answers[0].casefold()]
        assert right == [example.answer], example.id
        texts = [text.casefold() for text in example.options.values()]
        assert len(set(texts)) == len(texts), example.id
        asked.add((relation.name, example.answer_text.casefold()))
    expected = {(name, subject) for name, subject in held_out if name in OOD_TEMPLATES}
    assert asked == expected  # every held-out fact of a relation with OOD templates, and nothing trained on
    assert "vignette_diagnosis" not in OOD_TEMPLATES and set(OOD_TEMPLATES) < set(relations)

