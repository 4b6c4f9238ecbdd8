"""RLVR (PPO) vs SFT vs the base model, in distribution and out of distribution.

Trains the SFT baseline and the PPO policy on the bundled training split with the same model, then
evaluates base, SFT and RLVR with ``python -m medrlvr.evaluate`` (the same code as every evaluation) on

- ID: the bundled test split (the training distribution: 5 options, the bundled question style);
- OOD: MMLU-Pro health from a local file (``--ood``, default ``../shared/data/mmlu_pro_health.jsonl``:
  other question style, up to 10 options); when that file is absent, the bundled ``ood`` split
  (``data=bundled_ood``: the held-out facts asked in another style with 10 options), and the table says so.

Everything runs as subprocesses of the real CLIs and is logged to one MLflow experiment (each evaluation
nested under its training run). Prints and saves ``summary.json`` and ``summary.md`` in ``--out``.

    python benchmarks/rlvr_vs_sft.py                                   # tiny random model: wiring only
    python benchmarks/rlvr_vs_sft.py --model smollm2 --steps 20 --limit 100 --ood-limit 100
    python benchmarks/rlvr_vs_sft.py --train-override rollout.num_samples=8   # any training override
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OOD = REPO.parent / "shared" / "data" / "mmlu_pro_health.jsonl"


def run_cli(module: str, overrides: list[str], log_file: Path) -> None:
    """Run ``python -m module overrides``; its output goes to ``log_file``; fail loudly with its tail."""
    started = time.perf_counter()
    with log_file.open("w") as handle:
        code = subprocess.run([sys.executable, "-m", module, *overrides], stdout=handle, stderr=subprocess.STDOUT).returncode
    print(f"  {module} {' '.join(overrides[:3])} ... {time.perf_counter() - started:.0f} s (log: {log_file})", flush=True)
    if code != 0:
        sys.exit(f"{module} failed ({code}):\n" + "".join(log_file.read_text().splitlines(keepends=True)[-30:]))


def latest_run_id(uri: str, experiment: str, run_name: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_name}'", order_by=["start_time DESC"], max_results=1)
    return runs[0].info.run_id


def ood_setting(path: Path) -> tuple[str, str]:
    """(datasets override, description) of the OOD evaluation."""
    if path.is_file():
        return f"datasets={{mmlu_pro_health: {{path: {path}}}}}", f"MMLU-Pro health ({path.name})"
    return "datasets=[bundled_ood]", "bundled ood split (MMLU-Pro file not found)"


def evaluate(name: str, checkpoint: Path | None, datasets: str, limit: int | None, args, parent: str | None) -> dict:
    out = args.out / f"eval_{name}"
    overrides = [
        f"model={args.model}", datasets, f"output_dir={out}", f"num_threads={args.threads}",
        f"logger.tracking_uri={args.uri}", f"logger.experiment_name={args.experiment}", f"logger.run_name=eval-{name}",
        *args.eval_override,
    ]
    if checkpoint is not None:
        overrides.append(f"checkpoint={checkpoint}")
    if limit:
        overrides.append(f"limit={limit}")
    if parent:
        overrides.append(f"parent_run_id={parent}")
    run_cli("medrlvr.evaluate", overrides, args.out / f"eval_{name}.log")
    report = json.loads((out / "evaluation.json").read_text())
    return next(iter(report["datasets"].values()))


def train(algo: str, args) -> tuple[Path, str]:
    out = args.out / algo
    if args.reuse and (out / "policy" / "config.json").is_file():
        print(f"  reusing {out / 'policy'}")
        return out / "policy", latest_run_id(args.uri, args.experiment, algo)
    overrides = [
        f"model={args.model}", f"algo={algo}", f"trainer.max_steps={args.steps}", f"trainer.output_dir={out}",
        f"trainer.num_threads={args.threads}", "trainer.eval_before=false", f"logger.tracking_uri={args.uri}",
        f"logger.experiment_name={args.experiment}", f"logger.run_name={algo}", f"seed={args.seed}",
        *args.train_override, *(args.sft_override if algo == "sft" else args.ppo_override),
    ]
    run_cli("medrlvr.train", overrides, args.out / f"train_{algo}.log")
    return out / "policy", latest_run_id(args.uri, args.experiment, algo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model group option (tiny, smollm2, qwen2_5_3b)")
    parser.add_argument("--steps", type=int, default=2, help="PPO iterations and SFT steps")
    parser.add_argument("--limit", type=int, default=8, help="ID questions evaluated (0 = all)")
    parser.add_argument("--ood", type=Path, default=DEFAULT_OOD, help="MMLU-Pro health file (published schema)")
    parser.add_argument("--ood-limit", type=int, default=8, help="OOD questions evaluated (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("outputs/rlvr_vs_sft"))
    parser.add_argument("--experiment", default="rlvr_vs_sft")
    parser.add_argument("--reuse", action="store_true", help="keep a policy already trained in --out (resume)")
    parser.add_argument("--train-override", action="append", default=[], help="Hydra override for both trainings")
    parser.add_argument("--sft-override", action="append", default=[], help="Hydra override for SFT only")
    parser.add_argument("--ppo-override", action="append", default=[], help="Hydra override for PPO only")
    parser.add_argument("--eval-override", action="append", default=[], help="Hydra override for every evaluation")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.uri = f"sqlite:///{args.out / 'mlflow.db'}"
    os.environ.setdefault("PYTHONWARNINGS", "ignore")

    ood_datasets, ood_name = ood_setting(args.ood)
    print(f"ID: bundled test | OOD: {ood_name} | model {args.model}, {args.steps} steps | MLflow {args.uri}")
    sft_policy, sft_run = train("sft", args)
    ppo_policy, ppo_run = train("ppo", args)
    rows = {}
    for name, checkpoint, parent in (("base", None, None), ("sft", sft_policy, sft_run), ("rlvr", ppo_policy, ppo_run)):
        rows[name] = {
            "id": evaluate(f"{name}_id", checkpoint, "datasets=[bundled]", args.limit, args, parent),
            "ood": evaluate(f"{name}_ood", checkpoint, ood_datasets, args.ood_limit, args, parent),
        }
    summary = {
        "model": args.model, "steps": args.steps, "id": "bundled test", "ood": ood_name, "mlflow": args.uri,
        "results": {
            name: {f"{split}_{key}": r[split]["metrics"].get(key) for split in ("id", "ood")
                   for key in ("accuracy", "format_rate", "position_bias_tv", "num_questions")}
            for name, r in rows.items()
        },
    }
    header = "| model | ID accuracy | OOD accuracy | ID format | OOD format | ID bias TV | OOD bias TV |"
    lines = [f"ID = bundled test, OOD = {ood_name}; {args.model}, {args.steps} steps", "", header, "|---" * 7 + "|"]
    for name, r in summary["results"].items():
        cells = [r[k] for k in ("id_accuracy", "ood_accuracy", "id_format_rate", "ood_format_rate", "id_position_bias_tv", "ood_position_bias_tv")]
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
    table = "\n".join(lines)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
