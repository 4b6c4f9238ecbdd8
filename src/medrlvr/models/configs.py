"""A causal LM's config without its weights: ``tiny``, the bundled model, a local folder or a hub name.

A hub model's config comes from the local cache, else the hub; when the hub cannot be reached, from a copy of
its ``config.json`` shipped in ``hub_configs/`` (Qwen/Qwen2.5-3B, the study's model), so that sizes can be
planned on a machine without network.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import hf_hub_url
from huggingface_hub.utils import get_session
from transformers import AutoConfig, PretrainedConfig

from medrlvr.models.loading import TINY_MODEL, ModelLoadError, load_tokenizer, resolve_model_path, tiny_config

SHIPPED_CONFIGS = Path(__file__).parent / "hub_configs"


def shipped_config_file(name: str) -> Path:
    """Where the shipped copy of hub model ``name``'s ``config.json`` lives (``owner/model`` → ``owner--model.json``)."""
    return SHIPPED_CONFIGS / f"{name.replace('/', '--')}.json"


def _hub_reachable(name: str, timeout: float = 5.0) -> bool:
    """One request for ``name``'s ``config.json`` (the hub client's own retries take half a minute offline)."""
    try:
        return get_session().head(hf_hub_url(name, "config.json"), timeout=timeout, follow_redirects=True).status_code < 400
    except Exception:  # any network failure means "unreachable"
        return False


def load_model_config(name_or_path: str, cache_dir: Path | None = None) -> tuple[PretrainedConfig, str]:
    """``(config, source)`` of ``model.name_or_path``; ``source`` says where the values came from."""
    if name_or_path == TINY_MODEL:
        return tiny_config(len(load_tokenizer(TINY_MODEL, cache_dir))), "medrlvr.models.loading.tiny_config"
    path = resolve_model_path(name_or_path, cache_dir)
    if Path(path).exists():
        return AutoConfig.from_pretrained(path), f"{path}/config.json"
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True), f"{name_or_path} (hub cache)"
    except OSError:
        pass
    shipped = shipped_config_file(name_or_path)
    if shipped.is_file() and not _hub_reachable(name_or_path):
        values = {k: v for k, v in json.loads(shipped.read_text()).items() if not k.startswith("_")}
        config = AutoConfig.for_model(values.pop("model_type"), **values)
        return config, f"{name_or_path}'s config.json, shipped in medrlvr ({shipped.name}; the hub is unreachable)"
    try:
        return AutoConfig.from_pretrained(path), f"{name_or_path} (hub)"
    except OSError as err:
        raise ModelLoadError(f"model.name_or_path: cannot read the config of {name_or_path!r}: {err}") from err
