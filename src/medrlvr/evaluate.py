"""Evaluate a model on one or several datasets: ``python -m medrlvr.evaluate [hydra overrides]``.

Examples::

    python -m medrlvr.evaluate checkpoint=outputs/.../policy                  # bundled test and ood splits
    python -m medrlvr.evaluate checkpoint=PATH datasets=[medqa,mmlu_pro_health]   # from the hub
    python -m medrlvr.evaluate checkpoint=PATH \\
        'datasets={medqa_5opt: {path: ../shared/data/medqa_usmle_test_5opt.jsonl}, mmlu_pro_health: {path: ../shared/data/mmlu_pro_health.jsonl}}'

What it evaluates, prints, writes and logs: :mod:`medrlvr.evaluation.checkpoint`.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from medrlvr.cli import error_boundary
from medrlvr.config import register_configs
from medrlvr.paths import config_dir
from medrlvr.evaluation.checkpoint import evaluate_from_config

register_configs()


@hydra.main(config_path=str(config_dir()), config_name="evaluate", version_base="1.3")
def main(dict_cfg: DictConfig) -> float:
    """Hydra entry point; returns the first dataset's accuracy."""
    with error_boundary():
        hydra_cfg = HydraConfig.get()
        return evaluate_from_config(dict_cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
