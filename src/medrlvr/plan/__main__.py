"""``python -m medrlvr.plan [training overrides] [gpu_memory_gib=[80,141]] [prompt_tokens=512] [json=FILE]``.

The training config (``conf/config.yaml`` and the same overrides as ``python -m medrlvr.train``) is composed
and validated; the plan's own options are the keys of :class:`PlanOptions`. Prints the Markdown table, and
writes the JSON document to ``json`` when given.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medrlvr.config import AlgoConfig, ConfigError, register_configs, to_train_config
from medrlvr.paths import config_dir
from medrlvr.models.configs import load_model_config
from medrlvr.models.loading import ModelLoadError
from medrlvr.plan.memory import activation_dtype, memory_plan
from medrlvr.plan.report import as_json, markdown
from medrlvr.plan.sizes import Skeleton
from medrlvr.training.builders import lora_settings


@dataclass
class PlanOptions:
    """``gpu_memory_gib``: GPU sizes to plan against; ``prompt_tokens``: tokens of the longest prompt of a batch
    (batches pad to it; MedQA-USMLE questions with the R1 prompt stay under 512); ``json``: file for the JSON."""

    gpu_memory_gib: list[float] = field(default_factory=lambda: [80.0, 141.0])
    prompt_tokens: int = 512
    json: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.gpu_memory_gib or min(self.gpu_memory_gib) <= 0:
            raise ConfigError(f"gpu_memory_gib: give GPU sizes > 0 in GiB, e.g. [80,141], got {self.gpu_memory_gib}")
        if self.prompt_tokens < 1:
            raise ConfigError(f"prompt_tokens: must be >= 1, got {self.prompt_tokens}")


def split_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(plan options, training overrides): an argument is a plan option when its key is a field of PlanOptions."""
    names = {f.name for f in PlanOptions.__dataclass_fields__.values()}
    plan = [a for a in arguments if a.split("=", 1)[0] in names]
    return plan, [a for a in arguments if a not in plan]


def main(arguments: list[str]) -> int:
    try:
        plan_arguments, overrides = split_arguments(arguments)
        options: PlanOptions = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(PlanOptions), OmegaConf.from_dotlist(plan_arguments))
        )  # type: ignore[assignment]
        register_configs()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            composed = compose("config", overrides)
        cfg = to_train_config(composed)
        if not isinstance(cfg.algo, AlgoConfig):
            raise ConfigError(f"algo: the plan covers the RL algorithms (ppo, grpo, ...), not algo={cfg.algo.name}")
        config, source = load_model_config(cfg.model.name_or_path, Path(cfg.model.cache_dir) if cfg.model.cache_dir else None)
        skeleton = Skeleton(config, lora_settings(cfg.model), getattr(torch, activation_dtype(cfg)))
        follows = OmegaConf.select(composed, "algo.forward_batch_size") is None
        plan = memory_plan(cfg, skeleton, options.gpu_memory_gib, options.prompt_tokens, follows)
    except (ConfigError, ModelLoadError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(plan))
    print(f"\nModel config: {source}. GPU numbers are predictions, not measurements.")
    if options.json:
        Path(options.json).write_text(json.dumps(as_json(plan), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
