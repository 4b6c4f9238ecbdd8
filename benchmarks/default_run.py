"""Run a training (the default one unless overrides are given) and print its budget and learning numbers.

    python benchmarks/default_run.py                       # the README's default run
    python benchmarks/default_run.py trainer.max_steps=5   # any Hydra overrides

Prints wall time, peak memory of the training process, held-out format rate and accuracy before and after
training (same evaluation code, same seed), and the median seconds per PPO iteration split by phase.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from medrlvr.comparison.measurements import base_and_trained
from medrlvr.data.compose import set_name

PHASES = ("generate", "score", "logprobs", "update", "weight_sync")


def main(overrides: list[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medrlvr-bench-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    command = [sys.executable, "-m", "medrlvr.train", f"logger.tracking_uri={uri}", "logger.experiment_name=benchmark",
               f"trainer.output_dir={workdir / 'out'}", *overrides]
    print("running:", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=workdir)
    wall = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20

    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("benchmark").experiment_id])[0]
    metrics = run.data.metrics
    print(f"\nwall time {wall / 60:.1f} min | peak RSS {peak_gib:.2f} GiB | run {run.info.run_id}")
    print("\n| held-out | format rate | accuracy |\n|---|---|---|")
    name = set_name(run.data.params["data/name"], run.data.params["data/eval_split"])
    rate, accuracy = f"eval/{name}/format_rate", f"eval/{name}/accuracy"
    base, trained = base_and_trained(client, run.info.run_id, [key for key in (rate, accuracy) if key in metrics])
    for when, values in (("before", base), ("after", trained)):
        if accuracy in values:
            print(f"| {when} | {values[rate]:.3f} | {values[accuracy]:.3f} |")
    print("\n| phase | median s/iteration | share |\n|---|---|---|")
    medians = {p: statistics.median(m.value for m in client.get_metric_history(run.info.run_id, f"time/{p}_s")) for p in PHASES}
    total = sum(medians.values())
    for phase, seconds in medians.items():
        print(f"| {phase} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| total | {total:.2f} | 100% |")
    print("\n| iteration | reward | accuracy | format rate | response tokens |\n|---|---|---|---|---|")
    history = {k: client.get_metric_history(run.info.run_id, k) for k in
               ("reward/mean", "reward/accuracy", "reward/format_rate", "response/tokens_mean")}
    for i, reward in enumerate(history["reward/mean"]):
        print(f"| {reward.step} | {reward.value:+.3f} | {history['reward/accuracy'][i].value:.3f} | "
              f"{history['reward/format_rate'][i].value:.3f} | {history['response/tokens_mean'][i].value:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
