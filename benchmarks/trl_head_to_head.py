"""This project's ``algo=grpo`` against TRL's GRPOTrainer: the same work on the same machine, side by side.

    python benchmarks/trl_head_to_head.py                      # the default run's settings, 5 iterations
    python benchmarks/trl_head_to_head.py --iterations 3 --batch-size 4 --max-new-tokens 32   # a quick check
    python benchmarks/trl_head_to_head.py --seeds 42 43 44     # reward curves over three seeds, mean ± SE

Both sides get the same model (the bundled SmolLM2-135M-Instruct, fp32), the same LoRA (the project's
default: rank 16, alpha 32, top 8 of 30 layers, all projections), the same questions in the same order with
the same prompt text (the project's PromptBuilder output, pre-filled ``<think>`` included, handed to TRL as
plain strings), the same sampling (completions per prompt, max new tokens, temperature, stop at
``</answer>``), the same batch and minibatch sizes (one optimizer step per minibatch, one epoch), learning
rate, clipping, KL loss coefficient (k3) and loss aggregation, and the same reward (the project's
CorrectnessReward as a TRL reward function, scoring ``<think>`` + completion). Each side runs in its own
process with the same torch thread count; TRL runs in a separate virtual environment (``--venv``, created by
``benchmarks/trl_venv.sh`` when it lacks TRL), so TRL never becomes a dependency of the project.

Prints: seconds per iteration (median over iterations after the first), completions and generated tokens
per second, peak RSS of each process, the share of an iteration spent in generation, scoring, no-grad
log-prob passes and the update on each side, and both reward curves (mean reward per iteration). With several ``--seeds`` (each seed also draws its own
questions, the same on both sides) it prints each seed's report, then the reward curves' mean and standard
error over seeds and the per-seed difference of the sides' mean rewards.
TRL ships no PPO trainer any more (checked at run time), so ``algo=ppo`` has no TRL counterpart here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from medrlvr.config import TrainConfig, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.data.registry import load_split
from medrlvr.models.loading import resolve_model_path
from medrlvr.training.prompt_batches import prompt_loader
from medrlvr.training import builders

REPO = Path(__file__).resolve().parents[1]
# The project's loss aggregation modes and the TRL GRPO loss type computing the same thing.
TRL_LOSS_TYPES = {"seq-mean-token-mean": "grpo", "seq-mean-token-sum-norm": "dr_grpo", "token-mean": "bnpo"}
PHASES = ("generate", "score", "logprobs", "update")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per iteration (data.batch_size)")
    parser.add_argument("--num-samples", type=int, default=4, help="completions per prompt (rollout.num_samples)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--mini-batch-size", type=int, default=None, help="completions per optimizer step (default: algo=grpo's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each side")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run of each side per seed")
    parser.add_argument("--venv", type=Path, default=REPO.parent / "venv-trl", help="virtual environment holding TRL")
    parser.add_argument("--out", type=Path, default=None, help="folder for logs and results (default: a temp folder)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for both sides")
    return parser.parse_args(argv)


def project_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """The training overrides of the project side; the TRL side is derived from the config they compose."""
    overrides = [
        "algo=grpo",
        f"data.batch_size={args.batch_size}",
        f"rollout.num_samples={args.num_samples}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.temperature={args.temperature}",
        f"trainer.max_steps={args.iterations}",
        f"trainer.num_threads={args.threads}",
        f"seed={seed}",
    ]
    if args.mini_batch_size:
        overrides.append(f"algo.mini_batch_size={args.mini_batch_size}")
    return overrides + args.override


def compose_config(overrides: list[str]) -> TrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return to_train_config(compose(config_name="config", overrides=overrides))


def trl_spec(cfg: TrainConfig, threads: int) -> dict:
    """Everything the TRL side needs, taken from the project's composed config, prompts and data order."""
    algo, rollout, model = cfg.algo, cfg.rollout, cfg.model
    if algo.kl_in_reward or (algo.kl_loss_coef > 0 and algo.kl_estimator != "k3"):
        raise SystemExit("TRL's GRPOTrainer has a k3 KL loss term only: use algo.kl_in_reward=false and algo.kl_estimator=k3")
    if algo.dual_clip is not None or algo.filter_equal_reward_groups or algo.entropy_coef:
        raise SystemExit("dual clip, group filtering and the entropy bonus have no TRL GRPOTrainer equivalent here")
    if cfg.reward.name != "default":
        raise SystemExit("the TRL side hands over the default correctness reward only")
    completions = cfg.data.batch_size * rollout.num_samples
    if completions % algo.mini_batch_size or algo.mini_batch_size % rollout.num_samples:
        raise SystemExit("completions per iteration must split into minibatches of whole prompt groups")
    tokenizer = builders.build_tokenizer(model)
    prompts = builders.build_prompt_builder(cfg.data.prompt, tokenizer)
    examples = load_split(cfg.data, cfg.data.train_split, cfg.seed)
    ordered = [e for batch in prompt_loader(examples, cfg.data.batch_size, cfg.trainer.max_steps, cfg.seed) for e in batch]
    texts = [prompts(e) for e in ordered]
    token_lists = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    shared = len(os.path.commonprefix(token_lists[: cfg.data.batch_size]))
    print(f"prompts: {statistics.mean(map(len, token_lists)):.0f} tokens on average, the first {shared} shared "
          "by the prompts of a batch", flush=True)
    return {
        "model_path": resolve_model_path(model.name_or_path, Path(model.cache_dir) if model.cache_dir else None),
        "threads": threads,
        "seed": cfg.seed,
        "iterations": cfg.trainer.max_steps,
        "batch_size": cfg.data.batch_size,
        "response_prefix": prompts.response_prefix,
        "examples": [{"prompt": t, "answer": e.answer, "letters": e.letters} for t, e in zip(texts, ordered)],
        "reward": {"format_error": cfg.reward.format_error, "wrong_answer": cfg.reward.wrong_answer,
                   "correct_answer": cfg.reward.correct_answer},
        "lora": {"rank": model.lora_rank, "alpha": model.lora_alpha, "dropout": model.lora_dropout,
                 "top_layers": model.lora_top_layers, "target_modules": list(model.lora_target_modules)},
        "rollout": {"num_samples": rollout.num_samples, "max_new_tokens": rollout.max_new_tokens,
                    "temperature": rollout.temperature, "top_p": rollout.top_p, "top_k": rollout.top_k,
                    "stop_strings": list(rollout.stop_strings)},
        "algo": {"mini_batch_size": algo.mini_batch_size, "ppo_epochs": algo.ppo_epochs, "actor_lr": algo.actor_lr,
                 "weight_decay": algo.weight_decay, "max_grad_norm": algo.max_grad_norm,
                 "kl_loss_coef": algo.kl_loss_coef, "clip_range_low": algo.clip_range_low,
                 "clip_range_high": algo.clip_range_high, "trl_loss_type": TRL_LOSS_TYPES[algo.loss_aggregation]},
    }


def run_child(command: list[str], log_file: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``command`` with output to ``log_file``; return (wall seconds, peak RSS in GiB of that child)."""
    print("running:", shlex.join(command), flush=True)
    start = time.perf_counter()
    with log_file.open("w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_file.parent)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{command[0]} failed (log {log_file}):\n{tail}")
    return wall, usage.ru_maxrss / 2**20


def child_env(threads: int, pythonpath: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def run_project(overrides: list[str], completions: int, threads: int, out: Path) -> dict:
    """``python -m medrlvr.train`` on a temporary MLflow store; per-iteration wall seconds from metric timestamps."""
    uri = f"sqlite:///{out / 'mlflow.db'}"
    command = [sys.executable, "-m", "medrlvr.train", *overrides, f"logger.tracking_uri={uri}",
               "logger.experiment_name=trl_head_to_head", f"trainer.output_dir={out / 'project-out'}",
               "trainer.eval_before=false", "trainer.eval_after=false", "trainer.save_model=false",
               "trainer.checkpoint_every=0"]
    wall, peak = run_child(command, out / "project.log", child_env(threads, os.environ.get("PYTHONPATH")))
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("trl_head_to_head").experiment_id])[0]

    def history(key: str) -> list:
        return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)

    rewards = history("reward/mean")
    stamps = [m.timestamp / 1000 for m in rewards]
    phase = {p: [m.value for m in history(f"time/{p}_s")] for p in (*PHASES, "weight_sync")}
    first = history("perf/iteration_s")[0].value
    tokens_mean = [m.value for m in history("response/tokens_mean")]
    return {
        "iteration_s": [first] + [b - a for a, b in zip(stamps, stamps[1:])],
        "reward_mean": [m.value for m in rewards],
        "response_tokens": [t * completions for t in tokens_mean],
        "phases": phase,
        "wall": wall,
        "peak_gib": peak,
    }


def ensure_trl_venv(venv: Path) -> str:
    """The venv's python, creating the venv with benchmarks/trl_venv.sh when it has no TRL; returns TRL's version."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.util, trl; print(trl.__version__, hasattr(trl, 'PPOTrainer') "
             "or importlib.util.find_spec('trl.experimental.ppo') is not None)"]
    if not python.is_file() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run(["bash", str(REPO / "benchmarks" / "trl_venv.sh"), str(venv)], check=True)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def run_trl(spec: dict, venv: Path, threads: int, out: Path) -> dict:
    spec_file, result_file = out / "trl_spec.json", out / "trl_result.json"
    spec_file.write_text(json.dumps(spec))
    command = [str(venv / "bin" / "python"), str(REPO / "benchmarks" / "trl_side.py"), str(spec_file), str(result_file)]
    wall, peak = run_child(command, out / "trl.log", child_env(threads, str(REPO / "src")))
    result = json.loads(result_file.read_text())
    rest = [total - g - s - lp for total, g, s, lp in
            zip(result["iteration_s"], result["generate_s"], result["score_s"], result["logprobs_s"])]
    result["phases"] = {"generate": result["generate_s"], "score": result["score_s"], "logprobs": result["logprobs_s"],
                        "update": rest}
    return result | {"wall": wall, "peak_gib": peak}


def steady(values: list[float]) -> float:
    """Median over iterations after the first (the first also pays for warm-up), or the only value."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def with_other(side: dict) -> dict[str, list[float]]:
    """The side's phase seconds per iteration plus ``other``: the iteration's wall time not in any phase."""
    phases = side["phases"]
    other = [total - sum(values[i] for values in phases.values()) for i, total in enumerate(side["iteration_s"])]
    return phases | {"other": other}


def print_report(project: dict, trl: dict, trl_version: str, completions: int) -> None:
    sides = {"project algo=grpo": project, f"TRL {trl_version} GRPOTrainer": trl}
    print(f"\n| {completions} completions / iteration | " + " | ".join(sides) + " |\n|---|---|---|")
    rows = {
        "s / iteration (median, iterations 2..)": lambda r: f"{steady(r['iteration_s']):.1f}",
        "completions / s": lambda r: f"{completions / steady(r['iteration_s']):.2f}",
        "generated tokens / s (whole iteration)": lambda r: f"{steady(r['response_tokens']) / steady(r['iteration_s']):.1f}",
        "generation: generated tokens / s": lambda r: f"{steady(r['response_tokens']) / steady(r['phases']['generate']):.1f}",
        "peak RSS (GiB)": lambda r: f"{r['peak_gib']:.2f}",
        "process wall time (s, with loading)": lambda r: f"{r['wall']:.0f}",
        "mean reward over all iterations": lambda r: f"{statistics.mean(r['reward_mean']):+.3f}",
    }
    for name, cell in rows.items():
        print(f"| {name} | " + " | ".join(cell(r) for r in sides.values()) + " |")

    print("\n| phase (median s, iterations 2..) | project | share | TRL | share |\n|---|---|---|---|---|")
    phases = {name: with_other(side) for name, side in sides.items()}
    for phase in (*PHASES, "weight_sync", "other"):
        cells = []
        for name, side in sides.items():
            values = phases[name].get(phase)
            seconds = steady(values) if values else 0.0
            cells += [f"{seconds:.2f}", f"{seconds / steady(side['iteration_s']):.0%}"]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("(TRL: 'update' is the step time left after generation, scoring and no-grad log-probs; "
          "project: 'other' is Lightning, logging and callbacks between iterations)")

    print("\n| iteration | project reward | TRL reward | project s | TRL s |\n|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(project["reward_mean"], trl["reward_mean"])):
        print(f"| {i + 1} | {a:+.3f} | {b:+.3f} | {project['iteration_s'][i]:.1f} | {trl['iteration_s'][i]:.1f} |")


def mean_and_error(values: list[float]) -> str:
    """``mean ± standard error`` of ``values`` (the mean alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"


def print_seed_summary(results: dict[int, tuple[dict, dict]]) -> None:
    """Reward curves over seeds: per iteration and over all iterations, mean ± standard error of each side."""
    seeds = list(results)
    print(f"\nreward over seeds {', '.join(map(str, seeds))} (mean ± standard error over seeds)")
    print("\n| iteration | project reward | TRL reward |\n|---|---|---|")
    iterations = min(len(side["reward_mean"]) for pair in results.values() for side in pair)
    for i in range(iterations):
        cells = [mean_and_error([results[s][side]["reward_mean"][i] for s in seeds]) for side in (0, 1)]
        print(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    means = [[statistics.mean(results[s][side]["reward_mean"][:iterations]) for s in seeds] for side in (0, 1)]
    print(f"| all | {mean_and_error(means[0])} | {mean_and_error(means[1])} |")
    gains = [[results[s][side]["reward_mean"][iterations - 1] - results[s][side]["reward_mean"][0] for s in seeds]
             for side in (0, 1)]
    print(f"| last − first | {mean_and_error(gains[0])} | {mean_and_error(gains[1])} |")
    print("\nproject − TRL, mean reward over all iterations, per seed: "
          + ", ".join(f"{s}: {a - b:+.3f}" for s, a, b in zip(seeds, *means)))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="trl-h2h-"))
    out.mkdir(parents=True, exist_ok=True)
    print("load average before:", " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    version, has_ppo = ensure_trl_venv(args.venv).split()
    if has_ppo == "True":
        print(f"TRL {version} ships a PPOTrainer; this script compares GRPO only.")
    else:
        print(f"TRL {version} ships no PPO trainer: algo=ppo has no TRL counterpart.")
    results: dict[int, tuple[dict, dict]] = {}
    for seed in args.seeds:
        seed_out = out / f"seed-{seed}" if len(args.seeds) > 1 else out
        seed_out.mkdir(parents=True, exist_ok=True)
        overrides = project_overrides(args, seed)
        cfg = compose_config(overrides)
        spec = trl_spec(cfg, args.threads)
        print(f"seed {seed}: {cfg.data.batch_size} prompts x {cfg.rollout.num_samples} completions, "
              f"<= {cfg.rollout.max_new_tokens} new tokens, T={cfg.rollout.temperature}, minibatch {cfg.algo.mini_batch_size}, "
              f"{cfg.trainer.max_steps} iterations, LoRA rank {cfg.model.lora_rank} on top {cfg.model.lora_top_layers} layers "
              f"(0 = all; rank 0 = full fine-tuning), {args.threads} torch threads per side; logs in {seed_out}", flush=True)
        completions = cfg.data.batch_size * cfg.rollout.num_samples
        project = run_project(overrides, completions, args.threads, seed_out)
        trl = run_trl(spec, args.venv, args.threads, seed_out)
        print_report(project, trl, version, completions)
        results[seed] = (project, trl)
    if len(results) > 1:
        print_seed_summary(results)
    print("\nload average after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("command:", shlex.join(["python", "benchmarks/trl_head_to_head.py", *argv]))


if __name__ == "__main__":
    main(sys.argv[1:])
