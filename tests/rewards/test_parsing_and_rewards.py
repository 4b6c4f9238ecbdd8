"""Completion parsing rules and rewards, including reward-hacking shapes."""

import pytest

from medrlvr.rewards.functions import CompositeReward, CorrectnessReward, LengthPenaltyReward, PartialFormatReward
from medrlvr.rewards.parsing import FORMAT_ERRORS, ParseRules, answer_block_letter, parse_completion

LETTERS = "ABCDE"


@pytest.mark.parametrize(
    "text, letter",
    [
        ("<think>Low ferritin means iron deficiency.</think><answer>B</answer>", "B"),
        ("<think>reasoning</think>\n<answer> (C) </answer>\n", "C"),
        ("  <think>r</think> <answer>D.</answer>", "D"),
        ("<think>r</think><answer>A) Vitamin A deficiency</answer>", "A"),
        ("<think>r</think><answer>The answer is E</answer>", "E"),
        ("<think>r</think><answer>B. Vitamin A</answer>", "B"),
    ],
)
def test_valid_completions(text, letter):
    parsed = parse_completion(text, LETTERS)
    assert parsed.format_ok, parsed.format_error
    assert parsed.letter == letter


FAILURES = [
    ("The answer is B.", "missing_tags"),
    ("<think>iron</think> The answer is B", "missing_tags"),
    ("<answer>B</answer>", "missing_tags"),
    ("<think>a</think><answer>B</answer><answer>C</answer>", "multiple_blocks"),
    ("<think>a</think><think>b</think><answer>B</answer>", "multiple_blocks"),
    ("<answer>B</answer><think>because</think>", "wrong_order"),
    ("<think>a<answer>B</answer></think>", "wrong_order"),
    ("<think>a</think><answer>B</answer> or maybe C", "text_outside_tags"),
    ("Step 1: iron. <think>a</think><answer>B</answer>", "text_outside_tags"),
    ("<think>a</think> so B <answer>B</answer>", "text_outside_tags"),
    ("<think>   </think><answer>B</answer>", "empty_think"),
    ("<think>a</think><answer>none of these</answer>", "no_letter"),
    ("<think>a</think><answer></answer>", "no_letter"),
    ("<think>a</think><answer>A, C</answer>", "multiple_letters"),
    ("<think>a</think><answer>B or D</answer>", "multiple_letters"),
    ("<think>a</think><answer>A B C D E</answer>", "multiple_letters"),
    ("<think>a</think><answer>F</answer>", "letter_outside_options"),
    ("<think>a</think><answer>b is likely</answer>", "no_letter"),
]


@pytest.mark.parametrize("text, error", FAILURES)
def test_format_failures(text, error):
    parsed = parse_completion(text, LETTERS)
    assert parsed.format_error == error
    assert parsed.letter is None


def test_format_errors_lists_every_failure_name_once():
    # option_text needs the question's options: test_reward_reads_with_its_rules_and_the_questions_options
    names = {error for _, error in FAILURES} | {"option_text"}
    assert len(FORMAT_ERRORS) == len(names) and set(FORMAT_ERRORS) == names


def test_ten_option_letters_are_accepted():
    assert parse_completion("<think>x</think><answer>J</answer>", "ABCDEFGHIJ").letter == "J"
    assert parse_completion("<think>x</think><answer>J</answer>", LETTERS).format_error == "letter_outside_options"


def test_correctness_reward_values():
    reward = CorrectnessReward(format_error=-1.0, wrong_answer=0.0, correct_answer=1.0)
    out = reward(
        ["<think>x</think><answer>B</answer>", "<think>x</think><answer>C</answer>", "B"],
        ["B", "B", "B"],
        [LETTERS] * 3,
    )
    assert out.scores == [1.0, 0.0, -1.0]
    assert out.correct == [True, False, False]


def test_reward_hacks_are_not_rewarded():
    reward = CorrectnessReward()
    hacks = [
        "<think>x</think><answer>A, B, C, D, E</answer>",  # list every letter
        "<think>x</think><answer>B</answer><answer>B</answer>",  # answer twice
        "<think>x</think><answer>B</answer> Actually the answer is C.",  # hedge after the answer
        "<think></think><answer>B</answer>",  # skip reasoning entirely
        "B <think>x</think><answer>B</answer>",  # answer before thinking
    ]
    out = reward(hacks, ["B"] * len(hacks), [LETTERS] * len(hacks))
    assert out.scores == [-1.0] * len(hacks)


def test_reward_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        CorrectnessReward()(["a"], ["B", "C"], [LETTERS])


def test_length_penalty_formula():
    reward = LengthPenaltyReward(min_reasoning_words=10, penalty_coef=0.5)
    short = "<think>iron deficiency</think><answer>B</answer>"  # 2 words: penalty 0.5 * 8/10 = 0.4
    long = "<think>" + "word " * 12 + "</think><answer>B</answer>"
    broken = "no tags at all"
    out = reward([short, long, broken, short], ["B", "B", "B", "C"], [LETTERS] * 4)
    assert out.scores == pytest.approx([1.0 - 0.4, 1.0, -1.0, 0.0 - 0.4])
    assert out.reasoning_words == [2, 12, 0, 2]
    assert out.components["length_penalty"] == pytest.approx([-0.4, 0.0, 0.0, -0.4])


def test_length_penalty_makes_direct_answers_worse_than_reasoned_ones():
    reward = LengthPenaltyReward(min_reasoning_words=20, penalty_coef=0.5)
    direct = "<think>B</think><answer>B</answer>"
    reasoned = "<think>" + " ".join(["step"] * 25) + "</think><answer>B</answer>"
    scores = reward([direct, reasoned], ["B", "B"], [LETTERS] * 2).scores
    assert scores[0] < scores[1] == 1.0


def test_option_text_starting_with_a_capital_letter_word_is_one_answer():
    assert parse_completion("<think>x</think><answer>A. B cells</answer>", LETTERS).letter == "A"


def test_partial_format_credits_a_lone_answer_block_whatever_its_letter():
    reward = PartialFormatReward(format_error=-1.0, wrong_answer=0.0, correct_answer=1.0, partial_format=-0.5)
    completions = [
        "<think>iron</think><answer>B</answer>",  # strict and right
        "<think>iron</think><answer>C</answer>",  # strict and wrong
        "<answer>B</answer>",  # no think block, one valid letter
        "<think>iron deficiency, so <answer>C</answer>",  # think never closed
        "<think>x</think><answer>B</answer> I think",  # text after the answer
        "The answer is B.",  # no answer block
        "<think>x</think><answer>B or C</answer> more",  # two letters
        "<answer>B</answer><answer>B</answer>",  # two answer blocks
        "<think>x</think><answer>F</answer>",  # letter outside the options
    ]
    out = reward(completions, ["B"] * len(completions), [LETTERS] * len(completions))
    assert out.scores == [1.0, 0.0, -0.5, -0.5, -0.5, -1.0, -1.0, -1.0, -1.0]
    assert out.correct == [True, False, False, False, False, False, False, False, False]


def test_answer_block_letter_ignores_the_think_block_but_not_the_answer_rules():
    assert answer_block_letter("<answer> (D) </answer>", LETTERS) == "D"
    assert answer_block_letter("</answer>B<answer>", LETTERS) is None
    assert answer_block_letter("<answer>A, C</answer>", LETTERS) is None


STUDY = ParseRules(format="study")
STEPS_FIRST = "Step 1: small pale cells.\nStep 2: low ferritin.\n<think>Iron deficiency.</think>\n<answer>B</answer>"


def test_study_format_allows_and_reports_text_before_think():
    parsed = parse_completion(STEPS_FIRST, LETTERS, STUDY)
    assert parsed.format_ok and parsed.letter == "B"
    assert parsed.text_before_think == "Step 1: small pale cells.\nStep 2: low ferritin."
    assert parse_completion("<think>x</think><answer>B</answer>", LETTERS, STUDY).text_before_think == ""


def test_strict_format_rejects_text_before_think_but_still_reports_it():
    parsed = parse_completion(STEPS_FIRST, LETTERS)
    assert parsed.format_error == "text_outside_tags"
    assert parsed.text_before_think.startswith("Step 1")


@pytest.mark.parametrize(
    "text, error",
    [
        ("<think>a</think><answer>B</answer> or maybe C", "text_outside_tags"),  # nothing after </answer>
        ("<think>a</think> so B <answer>B</answer>", "text_outside_tags"),  # nothing between the blocks
        ("Steps <think>a</think><think>b</think><answer>B</answer>", "multiple_blocks"),
        ("<think>Step 1 <think>a</think><answer>B</answer>", "multiple_blocks"),  # a second <think> after a pre-fill
        ("Steps, then <answer>B</answer>", "missing_tags"),
        ("Steps <answer>B</answer><think>a</think>", "wrong_order"),
        ("Steps <think> </think><answer>B</answer>", "empty_think"),
        ("Steps <think>a</think><answer>A, C</answer>", "multiple_letters"),
    ],
)
def test_study_format_keeps_every_other_rule(text, error):
    assert parse_completion(text, LETTERS, STUDY).format_error == error


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown completion format 'loose'"):
        ParseRules(format="loose")


def test_reward_reads_with_its_rules_and_the_questions_options():
    options = [{"A": "Zinc", "B": "Iron", "C": "Iodine"}] * 2
    completions = [STEPS_FIRST, "<think>x</think><answer>iron</answer>"]
    assert CorrectnessReward()(completions, ["B", "B"], ["ABC"] * 2, options).scores == [-1.0, -1.0]
    study = CorrectnessReward(rules=ParseRules(format="study", match_option_text=True))
    out = study(completions, ["B", "B"], ["ABC"] * 2, options)
    assert out.scores == [1.0, 1.0] and [p.letter for p in out.parsed] == ["B", "B"]
    assert CorrectnessReward()(completions, ["B", "B"], ["ABC"] * 2, options).parsed[1].format_error == "option_text"


def test_matching_option_text_without_options_fails_clearly():
    reward = CorrectnessReward(rules=ParseRules(match_option_text=True))
    with pytest.raises(ValueError, match="match_option_text needs the questions' options"):
        reward(["<think>x</think><answer>B</answer>"], ["B"], [LETTERS])
    with pytest.raises(ValueError, match="1 option texts"):
        reward(["a", "b"], ["B", "B"], [LETTERS] * 2, [{"A": "x"}])


def test_partial_format_uses_the_rules_too():
    reward = PartialFormatReward(rules=ParseRules(match_option_text=True))
    out = reward(["<answer>Iron</answer>"], ["B"], ["ABC"], [{"A": "Zinc", "B": "Iron", "C": "Iodine"}])
    assert out.scores == [-0.5]


def test_composite_penalises_answering_before_reasoning_and_reasoning_before_think():
    reward = CompositeReward(rules=ParseRules(format="study"))  # 10 words, window 10, penalties 0.5 and 0.5
    reasoned = (
        "<think>Small pale red cells and a low ferritin mean empty iron stores, so the answer is B.</think>"
        "<answer>B</answer>"
    )  # 17 words, the letter at word 17: no penalty
    leaked = (
        "<think>Answer: B. Small pale red cells and a low ferritin mean empty iron stores.</think><answer>B</answer>"
    )  # the letter stated at word 1 of 15
    direct = "<think>Iron deficiency.</think><answer>B</answer>"  # 2 words < 10
    steps = "Step 1: pale cells. Step 2: low ferritin.\n" + reasoned  # text before <think>
    steps_and_leak = "Step 1: pale cells.\n<think>B</think><answer>C</answer>"  # both, and wrong
    broken = "<think>B</think>"
    out = reward(
        [reasoned, leaked, direct, steps, steps_and_leak, broken], ["B"] * 6, [LETTERS] * 6
    )
    assert out.components["leak_penalty"] == pytest.approx([0.0, -0.5, -0.5, 0.0, -0.5, 0.0])
    assert out.components["structure_penalty"] == pytest.approx([0.0, 0.0, 0.0, -0.5, -0.5, 0.0])
    assert out.scores == pytest.approx([1.0, 0.5, 0.5, 0.5, -1.0, -1.0])


def test_composite_reads_the_letter_as_the_answer_parser_does():
    reward = CompositeReward(min_reasoning_words=1, leak_window_words=4)
    cases = {
        "<think>B is correct since ferritin is low and cells are small.</think><answer>B</answer>": 0.5,
        "<think>Option A is wrong since ferritin is low, so iron.</think><answer>B</answer>": 0.0,  # a negation
        "<think>A patient with low ferritin lacks iron, answer B.</think><answer>B</answer>": 0.0,  # after word 4
    }
    out = reward(list(cases), ["B"] * 3, [LETTERS] * 3)
    assert out.components["leak_penalty"] == pytest.approx([-p for p in cases.values()])
