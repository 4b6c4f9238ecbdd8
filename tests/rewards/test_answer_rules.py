"""The answer block's letter rules (``extract_letter``), one test per rule, on real answer shapes."""

import pytest

from medrlvr.rewards.parsing import extract_letter, option_text_letters

LETTERS = "ABCDE"
OPTIONS = {"A": "Vitamin C", "B": "Iron", "C": "Vitamin D", "D": "Iodine", "E": "E. coli"}


@pytest.mark.parametrize("answer", ["B", " B ", "(B)", "B.", "B)", "B:"])
def test_rule_1_the_letter_alone(answer):
    assert extract_letter(answer, LETTERS) == ("B", None)


@pytest.mark.parametrize("answer", ["b", "(b)", "b."])
def test_rule_1_a_lone_lower_case_letter(answer):
    assert extract_letter(answer, LETTERS) == ("B", None)


@pytest.mark.parametrize(
    "answer",
    [
        "B) Iron", "B. Iron", "B: Iron", "(B) Iron", "Option B", "option B: Iron", "OPTION B", "Choice B",
        "B. IRON", "B. Iron\ndeficiency anaemia",
    ],
)
def test_rule_2_a_letter_opening_the_answer_with_its_text(answer):
    assert extract_letter(answer, LETTERS) == ("B", None)


def test_rule_2_text_after_the_letter_may_start_with_a_capital_word():
    assert extract_letter("A. B cells", LETTERS) == ("A", None)


@pytest.mark.parametrize(
    "answer",
    [
        "Answer: B",
        "The answer is B",
        "The answer is (B).",
        "Final answer: B",
        "Option: B",
        "answer = B",
        "The correct option is B",
        "The best choice is (B)",
        "the answer is option B",
        "I think the answer is B because ferritin is low.",
        "Low ferritin means iron deficiency, so the answer is B. Iron",
        "The answer is B, not A",
        "B. The answer is B",
    ],
)
def test_rule_3_a_lead_in_then_the_letter(answer):
    assert extract_letter(answer, LETTERS) == ("B", None)


@pytest.mark.parametrize(
    "answer",
    ["B is correct", "B is the answer", "(B) is the correct answer.", "Option B is the best choice", "B is right"],
)
def test_rule_4_a_letter_affirmed_at_the_start(answer):
    assert extract_letter(answer, LETTERS) == ("B", None)


@pytest.mark.parametrize(
    "answer, error",
    [("A is wrong, B is correct", "no_letter"), ("B is correct, or C", "multiple_letters"), ("B, or C", "multiple_letters")],
)
def test_rule_4_holds_only_at_the_start_and_alone(answer, error):
    assert extract_letter(answer, LETTERS) == (None, error)


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "none of these",
        "Iron deficiency anaemia",  # prose naming no letter
        "I think it is iron.",  # the pronoun I
        "A patient with these findings lacks iron.",  # the article A
        "not A",
        "Not A.",
        "A is wrong",
        "The answer is not A",
        "The answer isn't A",
        "B is not correct",
        "B is likely",  # only correct/right/best/answer affirm a letter
        "answer: b",  # lower case only as the whole answer
        "Vitamin B12",
        "IRON",  # capitals of a word are not a list of letters
        "B:Iron",  # rule 2 needs whitespace after the delimiter
        "B-cell lymphoma",
        "U.S. guidelines",
    ],
)
def test_answers_that_choose_no_letter(answer):
    assert extract_letter(answer, LETTERS) == (None, "no_letter")


def test_a_or_i_alone_is_the_letter():
    assert extract_letter("A", LETTERS) == ("A", None)
    assert extract_letter("I", LETTERS) == (None, "letter_outside_options")


@pytest.mark.parametrize(
    "answer",
    [
        "A, C",
        "B or D",
        "A B C D E",
        "A, B, C, D, E",
        "(A) and (C)",
        "A/B",
        "B, C",
        "B. C. D.",
        "The answer is A or B",
        "Either A or C",
        "B. Actually the answer is C",
        "Answer: B. The answer is C",
    ],
)
def test_several_letters_are_rejected(answer):
    assert extract_letter(answer, LETTERS) == (None, "multiple_letters")


@pytest.mark.parametrize("answer", ["F", "(F)", "The answer is F", "J. Zinc"])
def test_a_letter_outside_the_options(answer):
    assert extract_letter(answer, LETTERS) == (None, "letter_outside_options")


def test_ten_options_accept_the_letters_up_to_j_and_the_letter_i():
    assert extract_letter("J", "ABCDEFGHIJ") == ("J", None)
    assert extract_letter("I", "ABCDEFGHIJ") == ("I", None)
    assert extract_letter("I think so", "ABCDEFGHIJ") == (None, "no_letter")


@pytest.mark.parametrize(
    "answer", ["Iron", "iron.", "  IRON ", "The answer is iron", "Answer: Iron", '"Iron"', "**Iron**"]
)
def test_option_text_is_that_option_when_matching(answer):
    assert extract_letter(answer, LETTERS, OPTIONS, match_option_text=True) == ("B", None)


@pytest.mark.parametrize("answer", ["Iron", "The answer is iron"])
def test_option_text_is_a_format_failure_when_not_matching(answer):
    assert extract_letter(answer, LETTERS, OPTIONS, match_option_text=False) == (None, "option_text")
    assert extract_letter(answer, LETTERS) == (None, "no_letter")  # without the options it names nothing


def test_option_text_must_match_exactly_after_normalisation():
    assert extract_letter("Iron deficiency", LETTERS, OPTIONS, match_option_text=True) == (None, "no_letter")
    assert extract_letter("Vitamin", LETTERS, OPTIONS, match_option_text=True) == (None, "no_letter")


def test_option_text_is_tried_before_the_letter_rules():
    # "E. coli" is option E's text; without matching it is read by rule 2 as the letter E anyway.
    assert extract_letter("E. coli", LETTERS, OPTIONS, match_option_text=True) == ("E", None)
    assert extract_letter("B. Iron", LETTERS, OPTIONS, match_option_text=True) == ("B", None)


def test_option_text_matching_two_options_is_several_letters():
    twins = {"A": "Iron", "B": "iron"}
    assert option_text_letters("Iron", twins) == ["A", "B"]
    assert extract_letter("Iron", "AB", twins, match_option_text=True) == (None, "multiple_letters")


def test_matching_without_options_is_a_clear_error():
    with pytest.raises(ValueError, match="needs the question's options"):
        extract_letter("Iron", LETTERS, None, match_option_text=True)
