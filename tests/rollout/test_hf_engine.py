"""The hf rollout engine: shapes, masks, stop strings, seeds, log-probs and weight sync."""

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from medrlvr.models.loading import load_causal_lm
from medrlvr.rollout.base import SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine, pad_after_common_prefix, sample_inverse_cdf


@pytest.fixture()
def engine(tokenizer):
    return HFRolloutEngine(load_causal_lm("tiny", tokenizer, seed=0), tokenizer)


def test_generate_shapes_and_prompt_index(engine):
    out = engine.generate(["Question one?", "A longer second question here?"], SamplingParams(num_samples=3, max_new_tokens=5, seed=0))
    assert out.response_ids.shape == (6, 5) and out.logprobs.shape == (6, 5)
    assert out.prompt_ids.shape[0] == 6 and out.prompt_mask[:, -1].all()  # each prompt ends the row
    assert out.prompt_index == [0, 0, 0, 1, 1, 1]
    assert len(out.texts) == len(out.finish_reasons) == 6
    assert (out.logprobs <= 0).all() and (out.logprobs[out.response_mask == 0] == 0).all()


def test_same_seed_same_samples_and_other_seed_differs(engine):
    params = SamplingParams(num_samples=4, max_new_tokens=6, seed=7)
    first, second = engine.generate(["Hi"], params), engine.generate(["Hi"], params)
    assert torch.equal(first.response_ids, second.response_ids)
    other = engine.generate(["Hi"], SamplingParams(num_samples=4, max_new_tokens=6, seed=8))
    assert not torch.equal(first.response_ids, other.response_ids)


def test_greedy_logprobs_match_a_forward_pass(engine, tokenizer):
    out = engine.generate(["The patient"], SamplingParams(max_new_tokens=4, temperature=0.0))
    ids = torch.cat([out.prompt_ids, out.response_ids], dim=1)
    logits = engine.model(input_ids=ids).logits[:, out.prompt_ids.shape[1] - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, out.response_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out.logprobs, expected, atol=1e-4, rtol=0)
    assert torch.equal(out.response_ids, logits.argmax(-1))


def test_response_mask_stops_at_eos_and_stop_string(engine, tokenizer):
    eos = tokenizer.eos_token_id
    stop_ids = tokenizer.encode("x <answer>B</answer> trailing words", add_special_tokens=False)
    plain = tokenizer.encode("some words here", add_special_tokens=False)
    width = max(len(stop_ids), len(plain) + 2)
    rows = [
        stop_ids + [eos] * (width - len(stop_ids)),
        plain + [eos] + [eos] * (width - len(plain) - 1),
        (plain * width)[:width],
    ]
    mask, reasons = engine._response_mask(torch.tensor(rows), SamplingParams(stop_strings=("</answer>",)))
    kept = tokenizer.decode(torch.tensor(rows[0])[mask[0].bool()])
    assert kept.endswith("</answer>") and "trailing" not in kept
    assert mask[1].sum() == len(plain) + 1  # EOS included: stopping is an action
    assert mask[2].sum() == width
    assert reasons == ["stop", "stop", "length"]


def test_sync_weights_copies_a_separate_policy(tokenizer):
    engine = HFRolloutEngine(load_causal_lm("tiny", tokenizer, seed=0), tokenizer)
    policy = load_causal_lm("tiny", tokenizer, seed=1)
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = engine.generate(["Hello there"], params).logprobs
    engine.sync_weights(policy)
    after = engine.generate(["Hello there"], params)
    assert not torch.allclose(before, after.logprobs)
    reference = HFRolloutEngine(policy, tokenizer).generate(["Hello there"], params)
    torch.testing.assert_close(after.logprobs, reference.logprobs)


def test_pad_after_common_prefix_layout():
    rows, mask, shared = pad_after_common_prefix([[5, 6, 7, 8], [5, 6, 9], [5, 6, 7, 1, 2]], pad_id=0)
    assert shared == 2
    assert rows.tolist() == [[5, 6, 0, 7, 8], [5, 6, 0, 0, 9], [5, 6, 7, 1, 2]]
    assert mask.tolist() == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    # identical prompts keep their last token out of the shared prefix; no common token means left padding
    assert pad_after_common_prefix([[3, 4], [3, 4]], 0)[2] == 1
    rows, _, shared = pad_after_common_prefix([[1, 2, 3], [4]], 0)
    assert shared == 0 and rows.tolist() == [[1, 2, 3], [0, 0, 4]]


def test_shared_prefix_generation_matches_each_prompt_alone(engine, tokenizer):
    prefix = "System: answer medical questions with one letter. Example: <think>iron</think><answer>B</answer>\n"
    prompts = [prefix + "User: What lowers blood sugar?", prefix + "User: Which vitamin is made in the skin after sunlight?"]
    params = SamplingParams(num_samples=2, max_new_tokens=6, temperature=0.0)
    out = engine.generate(prompts, params)
    assert out.prompt_mask[:, : len(tokenizer(prefix)["input_ids"]) - 1].all()  # padding sits after the prefix
    for row, prompt in enumerate(out.prompt_index):
        alone = engine.generate([prompts[prompt]], SamplingParams(max_new_tokens=6, temperature=0.0))
        assert torch.equal(out.response_ids[row], alone.response_ids[0])
        torch.testing.assert_close(out.logprobs[row], alone.logprobs[0], atol=1e-4, rtol=0)


def plain_sampling(model, prompt_ids, prompt_mask, steps, temperature, top_k, top_p, seed):
    """Reference decoding: every row runs every step as a full forward pass over its whole sequence (no cache,
    no row leaving), transformers' warpers, then inverse-CDF sampling with one uniform number per row and step."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None,
                                   TopPLogitsWarper(top_p) if top_p < 1 else None])
    ids, mask = prompt_ids, prompt_mask
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0)).logits[:, -1]
            uniforms = 1.0 - torch.rand(len(ids))
            warped = [w for w in warpers if w is not None]
            for warper in warped:
                logits = warper(ids, logits)
            tokens = sample_inverse_cdf(torch.softmax(logits, -1), uniforms)
            ids, mask = torch.cat([ids, tokens[:, None]], 1), torch.cat([mask, torch.ones_like(tokens)[:, None]], 1)
    return ids[:, prompt_ids.shape[1] :]


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (40, 0.9)])
def test_sampled_tokens_equal_plain_full_passes_while_finished_rows_leave_the_batch(engine, top_k, top_p):
    """The engine's decoding (prompt KV shared across samples, finished rows dropped from the batch and the KV
    cache) samples the tokens of plain full forward passes for the same seed, and its log-probs are theirs."""
    prompts = ["Shared words then question one?", "Shared words then the second, longer question?"]
    params = SamplingParams(num_samples=4, max_new_tokens=12, temperature=1.3, top_k=top_k, top_p=top_p, stop_strings=("es",), seed=1)
    out = engine.generate(prompts, params)
    lengths = out.response_mask.sum(1)
    assert "stop" in out.finish_reasons and len(set(lengths.tolist())) > 2  # rows ended at different steps
    expected = plain_sampling(engine.model, out.prompt_ids, out.prompt_mask, 12, 1.3, top_k, top_p, seed=1)
    kept = out.response_mask.bool()
    assert torch.equal(out.response_ids[kept], expected[:, : out.response_ids.shape[1]][kept])
    ids = torch.cat([out.prompt_ids, out.response_ids], dim=1)
    mask = torch.cat([out.prompt_mask, out.response_mask], dim=1)
    with torch.no_grad():
        logits = engine.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0)).logits
    forward = torch.log_softmax(logits[:, out.prompt_ids.shape[1] - 1 : -1] / 1.3, -1)
    forward = forward.gather(-1, out.response_ids.unsqueeze(-1)).squeeze(-1) * out.response_mask
    torch.testing.assert_close(out.logprobs, forward, atol=1e-5, rtol=0)


def test_inverse_cdf_sampling_by_hand():
    probs = torch.tensor([[0.125, 0.0, 0.5, 0.375]]).expand(6, 4)  # exact in binary: the boundaries are exact
    uniforms = torch.tensor([0.0625, 0.125, 0.1251, 0.625, 0.6251, 1.0])
    assert sample_inverse_cdf(probs, uniforms).tolist() == [0, 0, 2, 2, 3, 3]  # token 1 (weight 0) is never drawn
    weights = torch.tensor([[2.0, 0.0, 6.0]])  # unnormalised weights: the total scales the target
    assert sample_inverse_cdf(weights, torch.tensor([0.25])).tolist() == [0]
    assert sample_inverse_cdf(weights, torch.tensor([0.26])).tolist() == [2]
    torch.manual_seed(0)
    draws = sample_inverse_cdf(probs[:1].expand(20000, 4), 1.0 - torch.rand(20000))
    frequencies = torch.bincount(draws, minlength=4) / 20000
    torch.testing.assert_close(frequencies, probs[0], atol=0.015, rtol=0)


def test_stop_string_check_is_built_once_per_engine(engine):
    params = SamplingParams(max_new_tokens=2, stop_strings=("</answer>",), seed=0)
    engine.generate(["Hi"], params)
    first = engine._stop_criterion(("</answer>",))
    engine.generate(["Hello"], params)
    assert engine._stop_criterion(("</answer>",)) is first and len(engine._stop_criteria) == 1


def test_weights_are_packed_once_per_call_for_all_its_chunks(tokenizer, monkeypatch):
    import medrlvr.rollout.hf as hf

    engine = HFRolloutEngine(load_causal_lm("tiny", tokenizer, seed=0), tokenizer, batch_size=4)
    entered = []
    real = hf.decoding_linears

    def counted(model, max_rows, fixed_weights):
        entered.append(max_rows)
        return real(model, max_rows=max_rows, fixed_weights=fixed_weights)

    monkeypatch.setattr(hf, "decoding_linears", counted)
    out = engine.generate(["One?", "Two?", "Three?"], SamplingParams(num_samples=2, max_new_tokens=3, seed=0))
    assert out.response_ids.shape[0] == 6  # chunks of 2 prompts: 2 and 1
    assert entered == [4]  # one packed copy for both chunks, sized for a chunk's 2 prompts x 2 samples


def test_captured_layer_inputs_equal_a_full_forward_pass(tokenizer):
    """With ``capture_layer``, the batch carries the hidden states entering that layer at every position the engine
    ran (prefix once, each prompt once, then one decoding step per token while rows leave): those of a plain forward
    pass over prompt + response; the last response column, never run, is 0."""
    model = load_causal_lm("tiny", tokenizer, seed=0)
    engine = HFRolloutEngine(model, tokenizer, capture_layer=1)
    prompts = ["Shared words then question one?", "Shared words then the second, longer question?"]
    params = SamplingParams(num_samples=4, max_new_tokens=12, temperature=1.3, stop_strings=("es",), seed=1)
    out = engine.generate(prompts, params)
    assert len(set(out.response_mask.sum(1).tolist())) > 2 and out.layer_inputs_of == 1
    ids = torch.cat([out.prompt_ids, out.response_ids], dim=1)
    mask = torch.cat([out.prompt_mask, out.response_mask], dim=1)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0), output_hidden_states=True)
    expected = full.hidden_states[1]  # the embeddings are [0]: [1] enters layer 1
    assert out.layer_inputs.shape == expected.shape
    # run: real prompt tokens, and response tokens followed by another (the last one is never fed back)
    ran = torch.cat([out.prompt_mask, out.response_mask[:, 1:], torch.zeros_like(out.response_mask[:, :1])], 1).bool()
    torch.testing.assert_close(out.layer_inputs[ran], expected[ran], atol=1e-5, rtol=0)
    assert (out.layer_inputs[:, -1] == 0).all()


def test_capture_layer_outside_the_model_is_refused(tokenizer):
    with pytest.raises(ValueError, match="capture_layer must be in \\[0, 2\\)"):
        HFRolloutEngine(load_causal_lm("tiny", tokenizer, seed=0), tokenizer, capture_layer=2)
