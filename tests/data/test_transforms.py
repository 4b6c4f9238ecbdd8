"""set_option_count: dropping and adding distractors, reshuffling, determinism and errors."""

from collections import Counter

import pytest

from medrlvr.data.bundled import load_bundled
from medrlvr.data.schema import OPTION_LETTERS, MCQExample, validate_example
from medrlvr.data.transforms import question_kinds, set_option_count, shuffle_options, shuffled_per_draw


@pytest.fixture(scope="module")
def train():
    return load_bundled("train")


def mcq(id_, options, answer, relation=None, **metadata):
    return MCQExample(
        question=f"Question {id_}?",
        options=dict(zip(OPTION_LETTERS, options)),
        answer=answer,
        source="test",
        id=id_,
        metadata={**metadata, **({} if relation is None else {"relation": relation})},
    )


def keys(example):
    return [text.casefold() for text in example.options.values()]


def test_none_returns_the_examples_unchanged(train):
    assert set_option_count(train, None, seed=0) is train


@pytest.mark.parametrize("count", [2, 4, 5, 7, 10])
def test_option_count_is_applied_and_the_correct_text_kept(train, count):
    transformed = set_option_count(train, count, seed=0)
    assert len(transformed) == len(train)
    for row, (before, after) in enumerate(zip(train, transformed), start=1):
        validate_example(after, "transformed", row)
        assert list(after.options) == list(OPTION_LETTERS[:count])
        assert after.answer_text == before.answer_text
        assert after.metadata == {**before.metadata, "original_answer": before.answer}
        assert (after.question, after.id, after.source) == (before.question, before.id, before.source)
        assert len(set(keys(after))) == count
        if count <= len(before.options):
            assert set(after.options.values()) <= set(before.options.values())
        else:
            assert set(before.options.values()) <= set(after.options.values())


def test_added_distractors_come_from_the_same_relation_when_it_has_enough(train):
    texts_by_relation = {}
    for example in train:
        texts_by_relation.setdefault(example.metadata["relation"], set()).update(example.options.values())
    for example in set_option_count(train, 10, seed=0):
        relation_texts = texts_by_relation[example.metadata["relation"]]
        if len(relation_texts) >= 10:
            assert set(example.options.values()) <= relation_texts, example.id
        else:
            assert relation_texts <= set(example.options.values()), example.id


def test_answer_letters_are_roughly_uniform(train):
    for count in (3, 4, 5, 7):
        letters = Counter(example.answer for example in set_option_count(train, count, seed=0))
        for letter in OPTION_LETTERS[:count]:
            assert 0.5 / count <= letters[letter] / len(train) <= 1.5 / count, (count, letter, letters)


def test_same_seed_same_result_other_seed_different(train):
    first = set_option_count(train, 4, seed=3)
    assert set_option_count(train, 4, seed=3) == first
    assert set_option_count(train, 4, seed=4) != first
    assert sum(a.options != b.options for a, b in zip(first, set_option_count(train, 4, seed=4))) > len(train) // 2


def test_result_does_not_depend_on_the_order_of_the_examples(train):
    forward = set_option_count(train, 7, seed=1)
    backward = set_option_count(list(reversed(train)), 7, seed=1)
    assert list(reversed(backward)) == forward


def test_added_texts_skip_case_insensitive_duplicates_and_the_correct_text():
    examples = [
        mcq("q1", ["Alpha", "Beta"], "A"),
        mcq("q2", ["alpha", "BETA", "Gamma"], "C"),
        mcq("q3", ["Delta", "beta "], "A"),
    ]
    for seed in range(20):
        first = set_option_count(examples, 4, seed=seed)[0]
        assert first.answer_text == "Alpha"
        assert sorted(keys(first)) == ["alpha", "beta", "delta", "gamma"]


def test_examples_without_relation_draw_from_any_question():
    examples = [mcq("q1", ["A1", "A2"], "B", relation="r1"), mcq("q2", ["B1", "B2", "B3"], "A")]
    first = set_option_count(examples, 4, seed=0)[0]
    assert first.answer_text == "A2" and "A1" in first.options.values()
    assert len(set(first.options.values()) & {"B1", "B2", "B3"}) == 2
    second = set_option_count(examples, 5, seed=0)[1]
    assert set(second.options.values()) == {"A1", "A2", "B1", "B2", "B3"}


def test_kinds_come_from_the_metadata_finest_first():
    medmcqa = mcq("q", ["a", "b"], "A", subject_name="Anatomy", topic_name="Thorax", exp="...")
    subject = ("subject_name", "Anatomy")
    assert question_kinds(medmcqa) == [(("topic_name", "Thorax"), subject), (subject,)]
    assert question_kinds(mcq("q", ["a", "b"], "A", meta_info="step1")) == [(("meta_info", "step1"),)]
    assert question_kinds(mcq("q", ["a", "b"], "A", meta_info={"step": 1}, topic_name=" ")) == []


def test_added_distractors_come_from_the_finest_kind_then_coarser_ones_then_any_question():
    examples = [
        mcq("q1", ["Phrenic nerve", "Vagus nerve"], "A", subject_name="Anatomy", topic_name="Thorax"),
        mcq("q2", ["Intercostal nerve", "Azygos vein"], "A", subject_name="Anatomy", topic_name="Thorax"),
        mcq("q3", ["Femoral nerve", "Sciatic nerve"], "A", subject_name="Anatomy", topic_name="Lower limb"),
        mcq("q4", ["Adrenaline", "Atropine", "Digoxin"], "A", subject_name="Pharmacology", topic_name="Thorax"),
    ]
    for seed in range(10):
        first = set_option_count(examples, 4, seed=seed)[0]  # the same topic of the same subject first
        assert set(first.options.values()) == {"Phrenic nerve", "Vagus nerve", "Intercostal nerve", "Azygos vein"}
        first = set_option_count(examples, 6, seed=seed)[0]  # then the same subject, not the other subject
        assert {"Femoral nerve", "Sciatic nerve"} <= set(first.options.values())
        first = set_option_count(examples, 7, seed=seed)[0]  # then any question
        assert len(set(first.options.values()) & {"Adrenaline", "Atropine", "Digoxin"}) == 1


@pytest.mark.parametrize(
    "text", ["All of the above", "None of the above", "Both A and B", "Neither of the options", "A, B and C", "B or D"]
)
def test_options_referring_to_other_options_are_never_drawn(text):
    examples = [mcq("q1", ["Alpha", "Beta"], "A"), mcq("q2", ["Gamma", "Delta", text], "A")]
    for seed in range(10):
        assert text not in set_option_count(examples, 4, seed=seed)[0].options.values()
    with pytest.raises(ValueError, match="option_count=5"):
        set_option_count(examples, 5, seed=0)


def test_not_enough_distinct_texts_raises():
    examples = [mcq("q1", ["Yes", "No"], "A"), mcq("q2", ["yes", "NO"], "B")]
    with pytest.raises(ValueError, match="option_count=3.*'q1'"):
        set_option_count(examples, 3, seed=0)


@pytest.mark.parametrize("count", [0, 1, 11, -4, 2.5, True, "4"])
def test_out_of_range_counts_raise(train, count):
    with pytest.raises(ValueError, match=r"data\.option_count.*2 to 10"):
        set_option_count(train, count, seed=0)


NUTRIENT = MCQExample(
    question="Which nutrient?",
    options={"A": "Vitamin C", "B": "Iron", "C": "Vitamin D", "D": "Iodine"},
    answer="B",
    source="t",
    id="q1",
)


def test_shuffled_options_remap_the_answer_letter():
    third = shuffle_options(NUTRIENT, seed=7, draw=2)
    # old letters A, C, D, B now shown as A, B, C, D: the answer "Iron" (B) moved to D
    assert third.options == {"A": "Vitamin C", "B": "Vitamin D", "C": "Iodine", "D": "Iron"}
    assert third.answer == "D" and third.metadata["original_answer"] == "B"
    assert third.question == NUTRIENT.question and NUTRIENT.answer == "B"  # the input is unchanged
    assert shuffle_options(NUTRIENT, seed=7, draw=2) == third  # seeded: the same draw, the same order
    again = shuffle_options(third, seed=7, draw=0)
    assert again.metadata["original_answer"] == "B"  # the published letter is kept across shuffles
    assert again.options[again.answer] == "Iron"


def test_each_draw_of_a_question_gets_its_own_order():
    draws = shuffled_per_draw([NUTRIENT], [0] * 12, seed=7)
    assert all(d.options[d.answer] == "Iron" for d in draws)
    assert len({tuple(d.options.values()) for d in draws}) > 1
    assert [d.options for d in draws[2:4]] == [shuffle_options(NUTRIENT, 7, k).options for k in (2, 3)]


def test_questions_with_options_about_options_keep_their_order():
    both = MCQExample(
        question="Which?", options={"A": "Iron", "B": "Zinc", "C": "Both A and B"}, answer="C", source="t", id="q2"
    )
    assert shuffle_options(both, seed=7, draw=1) == both


def test_prompt_loader_reshuffles_options_per_draw_and_resumes_the_same():
    from medrlvr.training.prompt_batches import prompt_loader

    examples = [NUTRIENT, MCQExample(question="Other?", options={"A": "x", "B": "y"}, answer="A", source="t", id="q2")]
    # 2 examples, 1 per iteration, 6 iterations: each question is drawn 3 times
    full = [batch.examples[0] for batch in prompt_loader(examples, 1, 6, seed=3, shuffle_options=True)]
    plain = [batch.examples[0] for batch in prompt_loader(examples, 1, 6, seed=3)]
    assert [e.id for e in full] == [e.id for e in plain]  # the same questions in the same order
    assert all(e.options == examples[int(e.id[1]) - 1].options for e in plain)
    nutrient = [e for e in full if e.id == "q1"]
    assert [e.options for e in nutrient] == [shuffle_options(NUTRIENT, 3, k).options for k in range(3)]
    resumed = [batch.examples[0] for batch in prompt_loader(examples, 1, 6, seed=3, start=4, shuffle_options=True)]
    assert resumed == full[4:]
