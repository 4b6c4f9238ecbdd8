"""Chunked log-probs equal the plain full-vocabulary computation: values, entropy and gradients."""

import pytest
import torch
from torch import nn

from medrlvr.algo.core import entropy_from_logits, logprobs_from_logits
from medrlvr.models.logprobs import token_logprobs


def setup(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(16, 50, bias=False).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 16, generator=generator))
    hidden = torch.randn(3, 7, 16, generator=generator).to(dtype).requires_grad_()
    tokens = torch.randint(0, 50, (3, 7), generator=generator)
    return head, hidden, tokens


def reference(head, hidden, tokens, temperature):
    logits = head(hidden).float() / temperature
    return logprobs_from_logits(logits, tokens), entropy_from_logits(logits)


@pytest.mark.parametrize("chunk_size", [1, 5, 21, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_entropy_and_gradients_match_the_full_computation(chunk_size, temperature):
    head, hidden, tokens = setup()
    want_lp, want_ent = reference(head, hidden, tokens, temperature)
    (want_lp.sum() + 0.3 * want_ent.sum()).backward()
    want_grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None

    logprobs, entropy = token_logprobs(hidden, head, tokens, temperature, chunk_size, entropy="grad")
    (logprobs.sum() + 0.3 * entropy.sum()).backward()
    torch.testing.assert_close(logprobs, want_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, want_ent, rtol=0, atol=1e-5)
    torch.testing.assert_close(hidden.grad, want_grads[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.weight.grad, want_grads[1], rtol=1e-5, atol=1e-5)


def test_detached_entropy_carries_no_gradient_and_none_skips_it():
    head, hidden, tokens = setup()
    logprobs, entropy = token_logprobs(hidden, head, tokens, chunk_size=4, entropy="detached")
    assert logprobs.requires_grad and not entropy.requires_grad
    torch.testing.assert_close(entropy, reference(head, hidden, tokens, 1.0)[1], rtol=0, atol=1e-5)
    logprobs.sum().backward()  # the entropy's graph is not needed for this
    assert token_logprobs(hidden, head, tokens, chunk_size=4)[1] is None


def test_bf16_logits_are_reduced_in_fp32():
    head, hidden, tokens = setup(torch.bfloat16)
    logprobs, _ = token_logprobs(hidden.detach(), head, tokens, chunk_size=5)
    assert logprobs.dtype == torch.float32
    torch.testing.assert_close(logprobs, reference(head, hidden.detach(), tokens, 1.0)[0], rtol=0, atol=1e-5)


def test_chunk_size_below_one_is_refused():
    head, hidden, tokens = setup()
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, head, tokens, chunk_size=0)


@pytest.mark.parametrize("chunk_size", [2, 1024])
def test_masked_positions_skip_the_output_layer_and_match_the_full_computation(chunk_size):
    head, hidden, tokens = setup()
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0]])
    want_lp, want_ent = (value * mask for value in reference(head, hidden, tokens, 0.7))
    (want_lp.sum() + 0.3 * want_ent.sum()).backward()
    want_grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    rows_seen = []
    head.register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[0]))

    logprobs, entropy = token_logprobs(hidden, head, tokens, 0.7, chunk_size, entropy="grad", mask=mask)
    assert sum(rows_seen) == 11  # the masked tokens only
    (logprobs.sum() + 0.3 * entropy.sum()).backward()
    torch.testing.assert_close(logprobs, want_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy, want_ent, rtol=0, atol=1e-5)
    assert (logprobs[mask == 0] == 0).all() and (entropy[mask == 0] == 0).all()
    torch.testing.assert_close(hidden.grad, want_grads[0], rtol=1e-5, atol=1e-5)
    assert (hidden.grad[mask == 0] == 0).all()
    torch.testing.assert_close(head.weight.grad, want_grads[1], rtol=1e-5, atol=1e-5)


def test_an_empty_mask_gives_zeros():
    head, hidden, tokens = setup()
    logprobs, entropy = token_logprobs(hidden, head, tokens, entropy="detached", mask=torch.zeros(3, 7))
    assert logprobs.shape == entropy.shape == (3, 7)
    assert (logprobs == 0).all() and (entropy == 0).all()
