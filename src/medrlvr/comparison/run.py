"""One comparison: select the runs, measure, summarise, write the files and log them to a ``compare`` run."""

from __future__ import annotations

import functools
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from medrlvr.comparison.measurements import CompareError, collect, distribution, select_runs, trained_data
from medrlvr.comparison.summary import Cell, summarize, write_outputs
from medrlvr.config import CompareConfig
from medrlvr.paths import default_tracking_uri


def run(cfg: CompareConfig, out_dir: Path) -> list[Cell]:
    """Select the runs, build the table, print it and write the files."""
    uri = cfg.tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiments = list(cfg.experiments or [])
    runs, notes = select_runs(client, experiments, list(cfg.run_ids))
    measurements = collect(client, runs, list(cfg.group_by), list(cfg.metrics))
    if not measurements:
        raise CompareError(
            f"no finished training or evaluation run with evaluation metrics in experiment(s) {experiments} "
            f"or run id(s) {list(cfg.run_ids)} at {uri}"
        )
    missing = [key for key in cfg.metrics if not any(key in m.metrics for m in measurements)]
    if missing:
        raise CompareError(
            f"metrics: {missing} found in none of the selected evaluations (evaluation metrics: accuracy, "
            "format_rate, majority_accuracy, position_bias_tv, reasoning_words, response_tokens, truncated_rate, ...)"
        )
    if cfg.in_distribution is None:
        names, ood = trained_data(runs)
        classify = functools.partial(distribution, in_distribution=names, out_of_distribution=ood)
    else:
        classify = functools.partial(distribution, in_distribution=list(cfg.in_distribution))
    cells, seed_notes = summarize(measurements, classify, list(cfg.metrics), cfg.confidence)
    text, paths = write_outputs(cells, notes + seed_notes, cfg, out_dir)
    comparison = log_comparison(client, experiments, runs, paths)
    print(text)
    print("\n".join(f"wrote {path}" for path in paths))
    print(f"logged to run {comparison} under compare/")
    return cells


def log_comparison(client: MlflowClient, experiments: list[str], runs: list[Run], paths: list[Path]) -> str:
    """A run named ``compare`` (tag ``kind=compare``; ignored by later comparisons) holding ``paths`` under
    ``compare/``, in the first of ``experiments`` (else the first compared run's), tagged with the compared
    run ids; returns its id."""
    found = client.get_experiment_by_name(experiments[0]) if experiments else None
    experiment_id = found.experiment_id if found else runs[0].info.experiment_id
    ids = ",".join(sorted(run.info.run_id for run in runs))
    run_id = client.create_run(experiment_id, run_name="compare", tags={"kind": "compare", "compared_runs": ids[:5000]}).info.run_id
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path="compare")
    client.set_terminated(run_id)
    return run_id


def compare_from_config(dict_cfg: DictConfig, default_output_dir: str) -> list[Cell]:
    """Run the comparison the composed config ``dict_cfg`` describes, writing to its ``output_dir``, else to
    ``default_output_dir``."""
    cfg: CompareConfig = OmegaConf.to_object(dict_cfg)  # type: ignore[assignment]
    return run(cfg, Path(cfg.output_dir or default_output_dir).resolve())
