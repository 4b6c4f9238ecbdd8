"""SFT targets and batches: the target earns the full reward, and only response tokens carry a loss."""

from medrlvr.data.bundled import load_bundled
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import MCQExample
from medrlvr.data.targets import sft_target
from medrlvr.rewards.functions import CorrectnessReward
from medrlvr.training.sft_module import IGNORE_INDEX, encode_sft_batch


def test_targets_are_correct_well_formatted_completions():
    examples = load_bundled("test")[:20]
    targets = [sft_target(e) for e in examples]
    scored = CorrectnessReward()(targets, [e.answer for e in examples], [e.letters for e in examples])
    assert all(scored.correct) and scored.scores == [1.0] * len(examples)
    first = examples[0]
    assert targets[0] == f"<think>The correct option is {first.answer}: {first.answer_text}.</think>\n<answer>{first.answer}</answer>"


def test_field_rationale_uses_the_explanation_and_falls_back_to_the_template():
    example = MCQExample("Q?", {"A": "x", "B": "y"}, "B", "test", "1", {"exp": "Because y."})
    assert sft_target(example, "field", "exp") == "<think>Because y.</think>\n<answer>B</answer>"
    empty = MCQExample("Q?", {"A": "x", "B": "y"}, "B", "test", "1", {"exp": ""})
    assert sft_target(empty, "field", "exp").startswith("<think>The correct option is B: y.</think>")


def test_labels_cover_the_response_and_eos_only(tokenizer):
    prompts = PromptBuilder(tokenizer)
    examples = load_bundled("test")[:3]
    texts = [prompts(e) for e in examples]
    responses = [sft_target(e)[len("<think>"):] for e in examples]
    input_ids, mask, labels = encode_sft_batch(tokenizer, texts, responses)
    for row, (prompt, response) in enumerate(zip(texts, responses)):
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        length = int(mask[row].sum())
        assert (labels[row, :prompt_len] == IGNORE_INDEX).all() and (labels[row, length:] == IGNORE_INDEX).all()
        target = labels[row, prompt_len:length]
        assert (target == input_ids[row, prompt_len:length]).all()
        assert target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == response
        assert tokenizer.decode(input_ids[row, :prompt_len]) == prompt
