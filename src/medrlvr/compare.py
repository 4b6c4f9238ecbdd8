"""Base vs SFT vs RLVR, in and out of distribution, over seeds, from MLflow runs:
``python -m medrlvr.compare [experiments=[NAME,...]] [run_ids=[ID,...]] [hydra overrides]``.

What it reads and writes: :mod:`medrlvr.comparison`.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from medrlvr.comparison.measurements import CompareError
from medrlvr.comparison.run import compare_from_config
from medrlvr.config import ConfigError, register_configs
from medrlvr.paths import config_dir

register_configs()


@hydra.main(config_path=str(config_dir()), config_name="compare", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    """Hydra entry point; bad input ends with a one-line error and exit code 2."""
    try:
        compare_from_config(dict_cfg, HydraConfig.get().runtime.output_dir)
    except (CompareError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
