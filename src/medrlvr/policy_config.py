"""The training config saved beside a policy, and the settings evaluation takes from it.

Training writes its resolved config to ``policy/medrlvr_config.yaml``. ``python -m medrlvr.evaluate
checkpoint=PATH`` then reads the policy's prompt (``data.prompt``), format semantics (``reward.format``,
``reward.match_option_text``), generation settings (``rollout``) and ``model.dtype`` from it, so the policy
is evaluated as it was trained. A command-line override of a setting, or of a key above it (``rollout=vllm``,
``reward.format=strict``, ``data.prompt=...``), wins; the group choices ``data=`` and ``model=`` pick a
dataset or base model and keep the checkpoint's prompt and dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medrlvr.config import ConfigError

POLICY_CONFIG = "medrlvr_config.yaml"
# The keys of a training config that describe how its policy generates and is read.
INHERITED_KEYS = ("data.prompt", "reward.format", "reward.match_option_text", "rollout", "model.dtype")
# Group choices that select a dataset or a base model, not how the policy is prompted.
SELECTION_GROUPS = ("data", "model")


def write_policy_config(folder: Path, cfg: Any) -> Path:
    """Write the resolved training config ``cfg`` (a dataclass) to ``folder/medrlvr_config.yaml``."""
    path = folder / POLICY_CONFIG
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True), encoding="utf-8")
    return path


def read_policy_config(folder: Path) -> DictConfig | None:
    """The training config saved in a policy folder; None for a folder without one."""
    path = folder / POLICY_CONFIG
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"checkpoint: cannot read {path}: {err}") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"checkpoint: {path} is not a mapping of config keys")
    return loaded


def leaves(node: Any, prefix: str) -> dict[str, Any]:
    """``dotted.key -> value`` for every non-mapping value under ``node`` (lists are values)."""
    if not isinstance(node, DictConfig):
        return {prefix: OmegaConf.to_container(node) if OmegaConf.is_config(node) else node}
    found: dict[str, Any] = {}
    for key in node:
        found.update(leaves(node[key], f"{prefix}.{key}"))
    return found


def inherited_settings(saved: DictConfig) -> dict[str, Any]:
    """The saved config's values of :data:`INHERITED_KEYS`, as ``dotted.key -> value``."""
    found: dict[str, Any] = {}
    for key in INHERITED_KEYS:
        node = OmegaConf.select(saved, key, default=None)
        if node is not None:
            found.update(leaves(node, key))
    return found


def override_keys(overrides: list[str]) -> list[str]:
    """The keys of command-line overrides (``+a.b=1`` → ``a.b``; ``~a`` → ``a``)."""
    return [item.split("=", 1)[0].lstrip("+~") for item in overrides]


def is_overridden(key: str, overridden: list[str]) -> bool:
    """Whether ``key`` or a key above it was overridden; ``data=``/``model=`` choices do not count."""
    return any(key == o or (key.startswith(o + ".") and o not in SELECTION_GROUPS) for o in overridden)


def apply_policy_config(cfg: DictConfig, saved: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Set ``cfg``'s inherited settings to the saved ones the command line did not override; return them."""
    overridden = override_keys(overrides)
    taken = {key: value for key, value in inherited_settings(saved).items() if not is_overridden(key, overridden)}
    for key, value in taken.items():
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigError(f"checkpoint: {POLICY_CONFIG} sets {key}={value!r}: {err}") from err
    return taken
