"""Reward-hacking remedies side by side: the default run without a remedy and with each remedy, on the same seeds.

    python benchmarks/hacking_remedies.py                          # 4 trainings with seed 42, then the tables
    python benchmarks/hacking_remedies.py --seeds 1 2 --threads 2
    python benchmarks/hacking_remedies.py --summarize-only         # the tables of the runs already in --out

Variants (each one override of the default run, README "Reward hacking: remedies side by side"):
no remedy (``reward=default``), the length penalty (``reward=length_penalty``), options re-shuffled each time
a question is drawn (``data.shuffle_options_each_epoch=true``) and the composite penalty (``reward=composite``).
Each is ``python -m medrlvr.train seed=S logger.experiment_name=remedies <override>`` with its MLflow store in
``--out``; a variant and seed with a finished run there is not trained again.

Prints per run: the Direct Answer Hacker share of the training completions (last iteration, mean of the last
three, peak), the median reasoning length at the last iteration, and on the held-out questions after training
accuracy, format rate, position bias (total variation between the letters chosen and the correct letters) and
the most chosen letter's share against its true share; plots the hacker share per iteration and the letters
chosen (``remedies.png``, first seed). Then runs ``medrlvr.compare`` (one row per variant) and
``medrlvr.analyze`` (stage plots per run) into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

EXPERIMENT = "remedies"
VARIANTS = {
    "no remedy": ("reward=default",),
    "length penalty": ("reward=length_penalty",),
    "options re-shuffled": ("data.shuffle_options_each_epoch=true",),
    "composite penalty": ("reward=composite",),
}
LETTERS = "ABCDE"


def variant_of(params: Mapping[str, str]) -> str:
    """The variant a run's logged params describe (``reward/name`` and ``data/shuffle_options_each_epoch``)."""
    shuffled = params.get("data/shuffle_options_each_epoch") == "True"
    reward = params.get("reward/name")
    if shuffled and reward == "default":
        return "options re-shuffled"
    names = {"default": "no remedy", "length_penalty": "length penalty", "composite": "composite penalty"}
    if shuffled or reward not in names:
        raise ValueError(f"a run with reward {reward!r} and shuffled options {shuffled} is none of the variants")
    return names[reward]


def finished_runs(client: MlflowClient) -> dict[tuple[str, int], object]:
    """The latest finished training run of each (variant, seed) in the experiment."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"]
    )
    return {(variant_of(r.data.params), int(r.data.params["seed"])): r for r in runs if "reward/name" in r.data.params}


def train(variant: str, seed: int, args: argparse.Namespace, uri: str) -> None:
    """One training run of ``variant`` (the real command line, in its own process)."""
    slug = variant.replace(" ", "_")
    command = [
        sys.executable, "-m", "medrlvr.train", f"seed={seed}", f"trainer.num_threads={args.threads}",
        f"logger.experiment_name={EXPERIMENT}", f"logger.tracking_uri={uri}", *VARIANTS[variant],
        f"trainer.output_dir={args.out / 'runs' / f'{slug}-{seed}'}", *args.overrides,
    ]
    print(f"training {variant}, seed {seed}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def last_values(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """The metric's values in step order."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def run_row(client: MlflowClient, run, eval_set: str) -> dict[str, object]:
    """The side-by-side numbers of one run (training-time stages, held-out evaluation after training)."""
    run_id = run.info.run_id
    hacker = last_values(client, run_id, "stage/direct_answer_hacker")
    reasoning = last_values(client, run_id, "length/reasoning_words_p50")
    final = {key: last_values(client, run_id, f"eval/{eval_set}/{key}") for key in ("accuracy", "format_rate")}
    bias = last_values(client, run_id, f"eval/{eval_set}/position_bias_tv")
    chosen = {x: last_values(client, run_id, f"eval/{eval_set}/chosen_{x}") for x in LETTERS}
    top = max(LETTERS, key=lambda x: chosen[x][-1] if chosen[x] else 0.0)
    true_top = last_values(client, run_id, f"eval/{eval_set}/true_{top}")
    return {
        "hacker last": hacker[-1],
        "hacker mean last 3": sum(hacker[-3:]) / len(hacker[-3:]),
        "hacker peak": max(hacker),
        "reasoning words p50": reasoning[-1],
        "accuracy before": final["accuracy"][0],
        "accuracy": final["accuracy"][-1],
        "format rate": final["format_rate"][-1],
        "position bias TV": bias[-1] if bias else float("nan"),
        "most chosen": f"{top} {chosen[top][-1]:.2f} (true {true_top[-1]:.2f})",
    }


def plot(client: MlflowClient, runs: Mapping[tuple[str, int], object], seed: int, eval_set: str, path: Path) -> Path:
    """Direct Answer Hacker share per iteration and the held-out letters chosen after training, per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, letters) = plt.subplots(1, 2, figsize=(12, 4.2))
    variants = [v for v in VARIANTS if (v, seed) in runs]
    for variant in variants:
        history = sorted(client.get_metric_history(runs[variant, seed].info.run_id, "stage/direct_answer_hacker"), key=lambda m: m.step)
        curves.plot([m.step for m in history], [m.value for m in history], marker="o", ms=3, label=variant)
    curves.set(xlabel="PPO iteration", ylabel="share of completions", title="Direct Answer Hacker (training)", ylim=(0, 1))
    curves.legend()
    bottom = [0.0] * (len(variants) + 1)
    names = [*variants, "correct letters"]
    for letter in LETTERS:
        shares = [last_values(client, runs[v, seed].info.run_id, f"eval/{eval_set}/chosen_{letter}")[-1] for v in variants]
        shares.append(last_values(client, runs[variants[0], seed].info.run_id, f"eval/{eval_set}/true_{letter}")[-1])
        letters.bar(names, shares, bottom=bottom, label=letter)
        bottom = [b + s for b, s in zip(bottom, shares)]
    letters.set(ylabel="share of held-out completions", title=f"Letter chosen after training ({eval_set})", ylim=(0, 1))
    letters.tick_params(axis="x", labelrotation=15)
    letters.legend(title="letter", bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.suptitle(f"Reward-hacking remedies, seed {seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(rows: Sequence[tuple[str, int, dict[str, object]]]) -> str:
    """The side-by-side table, one line per run."""
    columns = list(rows[0][2])
    lines = ["| variant | seed | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for variant, seed, row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append(f"| {variant} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training (one runs at a time)")
    parser.add_argument("--out", type=Path, default=Path("outputs/remedies"))
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///<out>/mlflow.db)")
    parser.add_argument("--eval-set", default="bundled_validation", help="held-out set of the tables")
    parser.add_argument("--summarize-only", action="store_true", help="no training: the tables of the finished runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides given to every training")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{args.out.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    if not args.summarize_only:
        for seed in args.seeds:
            for variant in VARIANTS:
                if (variant, seed) not in finished_runs(client):
                    train(variant, seed, args, uri)
    runs = finished_runs(client)
    rows = [(v, s, run_row(client, runs[v, s], args.eval_set)) for s in args.seeds for v in VARIANTS if (v, s) in runs]
    if not rows:
        sys.exit(f"no finished run of experiment {EXPERIMENT!r} with seeds {args.seeds} in {uri}")
    print(markdown(rows), flush=True)
    print(f"plot: {plot(client, runs, args.seeds[0], args.eval_set, args.out / 'remedies.png')}", flush=True)
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    subprocess.run(
        [
            sys.executable, "-m", "medrlvr.compare", f"experiments=[{EXPERIMENT}]", f"tracking_uri={uri}",
            "group_by=[reward/name,data/shuffle_options_each_epoch]", "metrics=[accuracy,format_rate,position_bias_tv]",
            f"output_dir={args.out / 'compare'}",
        ],
        check=True, env=env,
    )
    for variant, seed, _ in rows:
        output = args.out / "analysis" / f"{variant.replace(' ', '_')}-{seed}"
        subprocess.run(
            [sys.executable, "-m", "medrlvr.analyze", runs[variant, seed].info.run_id, "--tracking-uri", uri,
             "--output", str(output)],
            check=True, env=env,
        )


if __name__ == "__main__":
    main()
