"""SFT targets and batches: the target earns the full reward, and only response tokens carry a loss."""

import pytest
import torch

from medrlvr.config import ModelConfig
from medrlvr.data.bundled import load_bundled
from medrlvr.data.prompts import PromptBuilder
from medrlvr.data.schema import MCQExample
from medrlvr.data.targets import sft_target
from medrlvr.rewards.functions import CorrectnessReward
from medrlvr.models.actor_critic import LoraSettings, with_lora
from medrlvr.models.loading import load_causal_lm
from medrlvr.training.builders import build_actor_critic, build_policy
from medrlvr.training.sft_module import encode_sft_batch, sft_loss


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


def test_batch_is_the_left_padded_prompt_then_the_response_and_eos(tokenizer):
    prompts = PromptBuilder(tokenizer)
    examples = load_bundled("test")[:3]
    texts = [prompts(e) for e in examples]
    responses = [sft_target(e)[len("<think>"):] for e in examples]
    input_ids, mask, response_ids, response_mask = encode_sft_batch(tokenizer, texts, responses)
    width = response_ids.shape[1]
    assert (input_ids[:, -width:] == response_ids).all()
    for row, (prompt, response) in enumerate(zip(texts, responses)):
        prompt_mask, length = mask[row, :-width], int(response_mask[row].sum())
        assert tokenizer.decode(input_ids[row, :-width][prompt_mask.bool()]) == prompt
        assert prompt_mask.tolist() == sorted(prompt_mask.tolist())  # padding on the left only
        assert response_mask[row].tolist() == [1] * length + [0] * (width - length)
        assert (mask[row, -width:] == response_mask[row]).all()
        assert response_ids[row, length - 1] == tokenizer.eos_token_id
        assert tokenizer.decode(response_ids[row, : length - 1]) == response
    assert int(response_mask.sum(1).max()) == width  # the longest response has no padding


def test_loss_and_gradients_match_unpadded_labels_forwards_row_by_row(tokenizer):
    """The reference: one unpadded ``labels=`` forward per row, token-weighted (prompt tokens labelled -100)."""
    model = with_lora(load_causal_lm("tiny", tokenizer, seed=3), LoraSettings(rank=4, alpha=8, top_layers=0))
    examples = load_bundled("test")[:4]
    prompts = [PromptBuilder(tokenizer)(e) for e in examples]
    responses = [sft_target(e)[len("<think>"):] for e in examples]
    loss = sft_loss(model, *encode_sft_batch(tokenizer, prompts, responses))
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    total, tokens = 0.0, 0
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = torch.tensor([[-100] * len(prompt_ids) + response_ids])
        total = total + model(input_ids=torch.tensor([prompt_ids + response_ids]), labels=labels).loss * len(response_ids)
        tokens += len(response_ids)
    reference = total / tokens
    reference_grads = torch.autograd.grad(reference, [p for p in model.parameters() if p.requires_grad])
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    for grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-6)


def test_the_sft_policy_trains_the_same_adapters_as_the_ppo_actor(tokenizer):
    cfg = ModelConfig(name_or_path="tiny", lora_rank=4, lora_top_layers=1, critic="none")
    sft_policy = build_policy(cfg, tokenizer, seed=0)
    ppo_actor = build_actor_critic(cfg, tokenizer, seed=0, with_critic=False).actor
    trained = [{name for name, p in model.named_parameters() if p.requires_grad} for model in (sft_policy, ppo_actor)]
    assert trained[0] == trained[1] and trained[0]
    assert all(".layers.1." in name for name in trained[0])  # the top layer of two only
