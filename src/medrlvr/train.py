"""Train a policy on medical MCQA with PPO (default) or the SFT baseline (``algo=sft``):
``python -m medrlvr.train [hydra overrides]``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from medrlvr.cli import error_boundary
from medrlvr.config import register_configs
from medrlvr.paths import config_dir
from medrlvr.training.run import run_training

register_configs()


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def main(dict_cfg: DictConfig) -> float:
    """Hydra entry point; returns the accuracy on ``data.eval_split`` after training (the default sweep objective),
    or the last iteration's ``reward/accuracy`` without that evaluation."""
    with error_boundary():
        hydra_cfg = HydraConfig.get()
        return run_training(dict_cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
