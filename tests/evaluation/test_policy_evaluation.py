"""evaluate()/summarize() on a fake rollout engine returning fixed texts: hand-computed metrics."""

import pytest
import torch

from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import OPTION_LETTERS, MCQExample
from medrlvr.evaluation.policy import evaluate
from medrlvr.rollout.base import RolloutBatch, SamplingParams


def mcq(id_, num_options, answer):
    return MCQExample(
        question=f"Question {id_}?",
        options={x: f"option {x}" for x in OPTION_LETTERS[:num_options]},
        answer=answer,
        source="test",
        id=id_,
    )


class FixedEngine:
    """Returns ``texts[prompt][sample]`` with the given response lengths and finish reasons."""

    def __init__(self, texts, lengths=None, reasons=None):
        self.texts, self.lengths, self.reasons = texts, lengths, reasons
        self.params = None

    def generate(self, prompts, params: SamplingParams) -> RolloutBatch:
        self.params = params
        assert len(prompts) == len(self.texts)
        index = [p for p in range(len(prompts)) for _ in range(params.num_samples)]
        texts = [self.texts[p][s] for p in range(len(prompts)) for s in range(params.num_samples)]
        lengths = self.lengths or [1] * len(texts)
        mask = torch.zeros(len(texts), max(lengths), dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        zeros = torch.zeros_like(mask)
        return RolloutBatch(
            prompt_ids=zeros, prompt_mask=zeros, response_ids=zeros, response_mask=mask, logprobs=zeros.float(),
            texts=texts, finish_reasons=self.reasons or ["stop"] * len(texts), prompt_index=index,
        )

    def sync_weights(self, policy):
        pass


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return PromptBuilder(tokenizer, response_prefix="<think>")


def test_greedy_metrics_by_hand(prompts):
    examples = [mcq("q1", 5, "A"), mcq("q2", 5, "B"), mcq("q3", 4, "C"), mcq("q4", 10, "J")]
    engine = FixedEngine(
        [["x</think><answer>A</answer>"], ["y</think><answer>A</answer>"], ["no tags at all"], ["z z</think><answer>J</answer>"]],
        lengths=[3, 5, 7, 9],
        reasons=["stop", "stop", "length", "stop"],
    )
    result = evaluate(engine, prompts, examples, max_new_tokens=16, stop_strings=("</answer>",))
    assert engine.params.temperature == 0 and engine.params.num_samples == 1
    m = result.metrics
    assert m["accuracy"] == 0.5 and m["format_rate"] == 0.75
    assert m["reasoning_words"] == 1.0 and m["response_tokens"] == 6.0 and m["truncated_rate"] == 0.25
    assert (m["num_questions"], m["num_completions"]) == (4, 4) and "majority_accuracy" not in m
    assert (m["accuracy_options_4"], m["accuracy_options_5"], m["accuracy_options_10"]) == (0.0, 0.5, 1.0)
    assert (m["questions_options_4"], m["questions_options_5"], m["questions_options_10"]) == (1, 2, 1)
    assert (m["chosen_A"], m["chosen_B"], m["chosen_J"]) == (0.5, 0.0, 0.25)
    letter_keys = {key for key in m if key.startswith(("chosen_", "true_"))}
    assert letter_keys == {f"{kind}_{x}" for kind in ("chosen", "true") for x in "ABCDEFGHIJ"}
    assert m["true_A"] == m["true_B"] == m["true_C"] == m["true_J"] == 0.25
    # answered: q1 (A, true A), q2 (A, true B), q4 (J, true J): ½(|2/3 - 1/3| + |0 - 1/3| + |1/3 - 1/3|) = 1/3
    assert m["position_bias_tv"] == pytest.approx(1 / 3)
    assert [r["correct"] for r in result.records] == [True, False, False, True]
    assert result.records[2]["format_error"] == "missing_tags" and result.records[3]["num_options"] == 10
    assert result.records[0]["response"] == "<think>x</think><answer>A</answer>"


def test_sampling_gives_pass_at_1_mean_and_majority_vote(prompts):
    examples = [mcq("q1", 4, "A"), mcq("q2", 4, "C"), mcq("q3", 4, "B")]
    ok = "r</think><answer>{}</answer>"
    engine = FixedEngine(
        [
            [ok.format("A"), ok.format("B"), ok.format("B")],  # majority B: wrong, 1 of 3 right
            ["broken", ok.format("C"), ok.format("D")],  # C and D tie: C came first, right
            ["broken", "broken", "broken"],  # nothing answered: wrong
        ]
    )
    result = evaluate(engine, prompts, examples, max_new_tokens=16, temperature=0.7, num_samples=3, seed=5)
    assert (engine.params.num_samples, engine.params.temperature, engine.params.seed) == (3, 0.7, 5)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(2 / 9) and m["majority_accuracy"] == pytest.approx(1 / 3)
    assert (m["num_questions"], m["num_completions"]) == (3, 9)
    assert [r["sample"] for r in result.records] == [0, 1, 2] * 3
    # answered: A/A, B/A, B/A, C/C, D/C → chosen A 1, B 2, C 1, D 1; true A 3, C 2: ½(2 + 2 + 1 + 1)/5
    assert m["position_bias_tv"] == pytest.approx(0.6)


def test_a_position_biased_model_is_measured(prompts):
    examples = [mcq(f"q{i}", 4, x) for i, x in enumerate("ABCD")]
    engine = FixedEngine([["r</think><answer>A</answer>"]] * 4)
    m = evaluate(engine, prompts, examples, max_new_tokens=8).metrics
    assert m["chosen_A"] == 1.0 and m["accuracy"] == 0.25
    assert m["position_bias_tv"] == pytest.approx(0.75)


def test_evaluation_reads_completions_with_the_given_rules(tokenizer):
    from medrlvr.rewards.parsing import ParseRules

    prompts = PromptBuilder(tokenizer, response_prefix="", template="r1_zero")
    iron = MCQExample("Which?", {"A": "Zinc", "B": "Iron", "C": "Iodine"}, "B", "test", "q2")
    examples = [mcq("q1", 5, "A"), iron, mcq("q3", 5, "C")]
    texts = [
        ["Step 1: look. <think>x</think><answer>A</answer>"],  # text before <think>
        ["<think>y</think><answer>iron</answer>"],  # the option's text
        ["<think>z</think><answer>C</answer> more"],  # text after the answer
    ]
    strict = evaluate(FixedEngine(texts), prompts, examples, max_new_tokens=16).metrics
    assert strict["accuracy"] == strict["format_rate"] == 0.0
    assert strict["text_before_think_rate"] == pytest.approx(1 / 3)
    study = ParseRules(format="study", match_option_text=True)
    result = evaluate(FixedEngine(texts), prompts, examples, max_new_tokens=16, rules=study)
    assert [r["correct"] for r in result.records] == [True, True, False]
    assert [r["text_before_think"] for r in result.records] == [True, False, False]
    assert result.records[2]["format_error"] == "text_outside_tags"
