"""Each reward's named components on real completions, and the weighted sum of rewards, computed by hand."""

import pytest

from medrlvr.rewards.functions import (
    CompositeReward,
    CorrectnessReward,
    LengthPenaltyReward,
    PartialFormatReward,
)
from medrlvr.rewards.parsing import ParseRules
from medrlvr.rewards.weighted import WeightedRewards

STUDY = ParseRules(format="study")  # text before <think> passes the parser (and the composite penalises it)
REASONED = (  # 17 words of reasoning, the letter at the end
    "<think>Small pale red cells and a low ferritin mean empty iron stores, so the answer is B.</think>"
    "<answer>B</answer>"
)
COMPLETIONS = [
    REASONED,
    "The answer is B",  # a format failure (no tags)
    # the answer-first hack: the letter is stated in the first words of 14
    "<think>Answer: B. Small pale red cells and a low ferritin mean empty iron stores.</think><answer>B</answer>",
    "Step 1: pale cells. Step 2: low ferritin.\n" + REASONED,  # reasoning before <think>
    "<answer>B</answer>",  # a format failure, but one valid letter in one answer block
]
ANSWERS, LETTERS = ["B"] * 5, ["ABCDE"] * 5


def score(reward):
    return reward(COMPLETIONS, ANSWERS, LETTERS)


def test_correctness_is_the_only_component_of_the_default_reward():
    out = score(CorrectnessReward(rules=STUDY))
    assert out.reasoning_words == [17, 0, 14, 17, 0]
    assert out.components == {"correctness": [1.0, -1.0, 1.0, 1.0, -1.0]}
    assert out.scores == [1.0, -1.0, 1.0, 1.0, -1.0]


def test_length_penalty_component():
    out = score(LengthPenaltyReward(rules=STUDY))  # 20 words, coefficient 0.5: 0.5 · (20 − L) / 20
    assert out.components["correctness"] == [1.0, -1.0, 1.0, 1.0, -1.0]
    assert out.components["length_penalty"] == pytest.approx([-0.075, 0.0, -0.15, -0.075, 0.0])
    assert out.scores == pytest.approx([0.925, -1.0, 0.85, 0.925, -1.0])


def test_composite_reports_its_two_penalties_under_their_own_names():
    out = score(CompositeReward(rules=STUDY))  # both penalties 0.5
    assert set(out.components) == {"correctness", "leak_penalty", "structure_penalty"}
    assert out.components["leak_penalty"] == [0.0, 0.0, -0.5, 0.0, 0.0]
    assert out.components["structure_penalty"] == [0.0, 0.0, 0.0, -0.5, 0.0]
    assert out.scores == [1.0, -1.0, 0.5, 0.5, -1.0]


def test_partial_format_credit_component():
    out = score(PartialFormatReward(rules=STUDY))  # -0.5 instead of -1 for the lone answer block
    assert out.components == {
        "correctness": [1.0, -1.0, 1.0, 1.0, -1.0],
        "partial_format_credit": [0.0, 0.0, 0.0, 0.0, 0.5],
    }
    assert out.scores == [1.0, -1.0, 1.0, 1.0, -0.5]


@pytest.mark.parametrize("reward", [CorrectnessReward, LengthPenaltyReward, CompositeReward, PartialFormatReward])
def test_components_sum_to_the_score(reward):
    out = score(reward(rules=STUDY))
    assert [sum(parts) for parts in zip(*out.components.values())] == pytest.approx(out.scores)


def test_weighted_sum_of_two_rewards():
    rewards = {"default": CorrectnessReward(rules=STUDY), "length_penalty": LengthPenaltyReward(rules=STUDY)}
    out = score(WeightedRewards(rewards, {"default": 1.0, "length_penalty": 0.5}))
    # 1 · (1, −1, 1, 1, −1) + 0.5 · (0.925, −1, 0.85, 0.925, −1)
    assert out.components["default"] == [1.0, -1.0, 1.0, 1.0, -1.0]
    assert out.components["length_penalty"] == pytest.approx([0.4625, -0.5, 0.425, 0.4625, -0.5])
    assert out.scores == pytest.approx([1.4625, -1.5, 1.425, 1.4625, -1.5])
    first = score(CorrectnessReward(rules=STUDY))  # the first reward's parse and correctness are the output's
    assert (out.parsed, out.correct, out.reasoning_words) == (first.parsed, first.correct, first.reasoning_words)


def test_one_reward_with_weight_one_scores_as_itself():
    composite = CompositeReward(rules=STUDY)
    assert score(WeightedRewards({"composite": composite}, {"composite": 1.0})).scores == score(composite).scores


def test_weighted_rewards_need_one_weight_per_reward():
    with pytest.raises(ValueError, match="weights are for"):
        WeightedRewards({"default": CorrectnessReward()}, {"other": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        WeightedRewards({}, {})
