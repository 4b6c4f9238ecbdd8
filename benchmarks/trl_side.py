"""The TRL side of benchmarks/trl_head_to_head.py: GRPOTrainer on the work described by a spec file.

    <trl venv>/bin/python benchmarks/trl_side.py SPEC.json RESULT.json    (with the project's src/ on PYTHONPATH)

Runs in its own virtual environment (benchmarks/trl_venv.sh) and imports nothing of the project but its reward.
The spec holds the already-templated prompts in iteration order, so TRL sees the project's exact prompt text
and questions. Writes per-iteration wall seconds, mean reward and the seconds spent in generation, scoring and
no-grad log-prob forwards to RESULT.json.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from medrlvr.rewards.functions import CorrectnessReward


class IterationClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (the first entry is the start of training)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.times = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.times.append(time.perf_counter())


def timed_generate(model: torch.nn.Module, tokenizer, record: list[dict[str, float]]) -> None:
    """Wrap ``model.generate`` to pass the tokenizer (transformers needs it for stop strings, which TRL's
    generate call does not pass) and to record seconds, rows and decoding steps of every call."""
    generate = model.generate

    @functools.wraps(generate)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        output = generate(*args, tokenizer=tokenizer, **kwargs)
        prompt_width = kwargs["input_ids"].shape[1]
        record.append({"seconds": time.perf_counter() - start, "rows": output.shape[0], "steps": output.shape[1] - prompt_width})
        return output

    model.generate = wrapper


def correctness_reward(spec: dict[str, Any], record: list[dict[str, float]]):
    """The project's CorrectnessReward as a TRL reward function, scoring the pre-filled prefix plus the completion."""
    reward = CorrectnessReward(**spec["reward"])
    prefix = spec["response_prefix"]

    def correctness(prompts, completions, completion_ids, answer, letters, **kwargs) -> list[float]:
        start = time.perf_counter()
        scores = reward([prefix + c for c in completions], answer, letters).scores
        record.append(
            {
                "seconds": time.perf_counter() - start,
                "mean": sum(scores) / len(scores),
                "tokens": sum(len(ids) for ids in completion_ids),
                "completions": len(scores),
            }
        )
        return scores

    return correctness


def timed_logprobs(trainer: GRPOTrainer, record: list[float]) -> None:
    """Time the trainer's no-grad log-prob passes (old and reference log-probs); passes with gradients belong
    to the update."""
    method = trainer._get_per_token_logps_and_entropies

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any):
        if torch.is_grad_enabled():
            return method(*args, **kwargs)
        start = time.perf_counter()
        result = method(*args, **kwargs)
        record.append(time.perf_counter() - start)
        return result

    trainer._get_per_token_logps_and_entropies = wrapper


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    algo, rollout, lora = spec["algo"], spec["rollout"], spec["lora"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    first = spec["examples"][0]["prompt"]
    if tokenizer(first)["input_ids"] != tokenizer(first, add_special_tokens=False)["input_ids"]:
        raise SystemExit("the tokenizer adds special tokens to plain-text prompts: TRL would not see the project's tokens")
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    generations: list[dict[str, float]] = []
    rewards: list[dict[str, float]] = []
    logprob_seconds: list[float] = []
    timed_generate(model, tokenizer, generations)

    completions = spec["batch_size"] * rollout["num_samples"]
    steps_per_iteration = completions // algo["mini_batch_size"]
    num_layers = model.config.num_hidden_layers
    peft_config = None
    if lora["rank"] > 0:
        layers = list(range(num_layers - lora["top_layers"], num_layers)) if lora["top_layers"] else None
        peft_config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            layers_to_transform=layers,
            layers_pattern="layers" if layers else None,
            task_type="CAUSAL_LM",
        )
    config = GRPOConfig(
        output_dir=str(Path(result_path).parent / "trl-out"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=spec["seed"],
        max_steps=spec["iterations"] * steps_per_iteration,
        per_device_train_batch_size=algo["mini_batch_size"],
        gradient_accumulation_steps=1,
        steps_per_generation=steps_per_iteration,
        num_iterations=algo["ppo_epochs"],
        num_generations=rollout["num_samples"],
        max_completion_length=rollout["max_new_tokens"],
        temperature=rollout["temperature"],
        top_p=rollout["top_p"],
        top_k=rollout["top_k"],
        generation_kwargs={"stop_strings": rollout["stop_strings"]} if rollout["stop_strings"] else None,
        shuffle_dataset=False,
        learning_rate=algo["actor_lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=algo["weight_decay"],
        max_grad_norm=algo["max_grad_norm"],
        beta=algo["kl_loss_coef"],
        epsilon=algo["clip_range_low"],
        epsilon_high=algo["clip_range_high"],
        loss_type=algo["trl_loss_type"],
        scale_rewards="group",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list(spec["examples"])
    clock = IterationClock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=correctness_reward(spec, rewards),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock],
    )
    timed_logprobs(trainer, logprob_seconds)
    trainer.train()

    ends = clock.times[::steps_per_iteration]
    per_forward = len(logprob_seconds) // spec["iterations"]
    result = {
        "trl_version": trl.__version__,
        "iteration_s": [b - a for a, b in zip(ends, ends[1:])],
        "reward_mean": [r["mean"] for r in rewards],
        "score_s": [r["seconds"] for r in rewards],
        "response_tokens": [r["tokens"] for r in rewards],
        "completions": [r["completions"] for r in rewards],
        "generate_s": [g["seconds"] for g in generations],
        "generate_rows": [g["rows"] for g in generations],
        "generate_steps": [g["steps"] for g in generations],
        "logprobs_s": [sum(logprob_seconds[i * per_forward : (i + 1) * per_forward]) for i in range(spec["iterations"])],
    }
    Path(result_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
