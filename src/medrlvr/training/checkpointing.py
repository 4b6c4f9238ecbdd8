"""Resumable training checkpoints: atomic, checksummed, last K kept, loaded without unpickling code.

A checkpoint is a folder ``<output_dir>/checkpoints/iter_XXXXX/`` holding

- ``trainable.safetensors``: every parameter with ``requires_grad`` (LoRA adapters + value head, or the
  full actor and critic); frozen weights are rebuilt from the config;
- ``optimizer.pt``: the optimizer's ``state_dict`` (read back with ``torch.load(weights_only=True)``);
- ``state.json``: iteration, MLflow run id, RNG states (Python, NumPy, torch) and callback state;
- ``manifest.json``, written last: size and SHA-256 of each file above.

Writes go to a hidden temporary folder that is fsynced and renamed into place, so a folder named
``iter_XXXXX`` is complete unless a file was damaged afterwards, which the manifest detects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
MANIFEST = "manifest.json"
_PREFIX = "iter_"


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or damaged, or would contain non-finite values."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint folder and its ``state.json`` contents."""

    path: Path
    iteration: int
    run_id: str | None
    state: dict[str, Any]


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, and CUDA if present) generator states as JSON-ready values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name (shared parameters once)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: Path,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    run_id: str | None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``root/iter_<iteration>`` atomically, then delete all but the newest ``keep`` checkpoints.

    Raises :class:`CheckpointError` (writing nothing) if a trainable tensor holds NaN or inf.
    """
    tensors = {name: t.contiguous().cpu() for name, t in trainable_state(model).items()}
    bad = [name for name, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"refusing to checkpoint iteration {iteration}: non-finite values in {bad[:5]}")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{iteration:05d}"
    staging = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_file(tensors, str(staging / TRAINABLE))
        torch.save(optimizer.state_dict(), staging / OPTIMIZER)
        state = {"iteration": iteration, "run_id": run_id, "rng": rng_state(), "extra": extra or {}}
        (staging / STATE).write_text(json.dumps(state))
        files = {name: {"bytes": (staging / name).stat().st_size, "sha256": _sha256(staging / name)}
                 for name in (TRAINABLE, OPTIMIZER, STATE)}
        (staging / MANIFEST).write_text(json.dumps({"iteration": iteration, "files": files}, indent=1))
        for name in (*files, MANIFEST):
            _fsync(staging / name)
        _fsync(staging)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and any leftover temporary folders."""
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for old in _candidates(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _candidates(root: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    folders = [p for p in root.glob(f"{_PREFIX}*") if p.is_dir() and p.name[len(_PREFIX) :].isdigit()]
    return sorted(folders, key=lambda p: int(p.name[len(_PREFIX) :]), reverse=True)


def verify(folder: Path) -> Checkpoint:
    """Check every file against the manifest; raise :class:`CheckpointError` naming the first bad file."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{manifest_path}: missing or unreadable manifest ({err})") from err
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, manifest says {expected['bytes']} (truncated?)")
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{path}: checksum does not match the manifest (corrupt)")
    state = json.loads((folder / STATE).read_text())
    return Checkpoint(path=folder, iteration=state["iteration"], run_id=state["run_id"], state=state)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest checkpoint that passes :func:`verify`; damaged ones are skipped with a warning."""
    for folder in _candidates(root):
        try:
            return verify(folder)
        except CheckpointError as err:
            log.warning("skipping damaged checkpoint: %s", err)
    return None


def resolve_resume(resume: str | None, output_dir: Path) -> Checkpoint | None:
    """``resume=auto``: the latest complete checkpoint under ``output_dir`` (None in a fresh folder);
    ``resume=<path>``: that checkpoint folder, or the latest complete one inside a ``checkpoints`` folder."""
    if resume is None:
        return None
    if resume == "auto":
        found = latest_checkpoint(checkpoint_root(output_dir))
        if found is None and _candidates(checkpoint_root(output_dir)):
            raise CheckpointError(f"resume=auto: every checkpoint in {checkpoint_root(output_dir)} is damaged")
        return found
    path = Path(resume).expanduser()
    if (path / MANIFEST).exists():
        return verify(path)
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"resume: no complete checkpoint in {path}")
    return found


def load_checkpoint(checkpoint: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore trainable parameters, optimizer state and RNG states from a verified checkpoint."""
    tensors = load_file(str(checkpoint.path / TRAINABLE))
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, unknown = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise CheckpointError(
            f"{checkpoint.path / TRAINABLE} does not match the model (missing {missing[:3]}, unexpected {unknown[:3]}):"
            " was it written with another model config?"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(checkpoint.path / OPTIMIZER, weights_only=True, map_location="cpu"))
    set_rng_state(checkpoint.state["rng"])


class CheckpointCallback(L.Callback):
    """Saves after every ``every`` iterations and the last; on SIGINT saves and stops after the iteration.

    ``resume_from`` is loaded when training starts (the optimizer exists by then). The numerics guard and
    callbacks with a ``state_dict`` (e.g. the stage tracker) are saved in the checkpoint's ``extra`` state.
    """

    def __init__(self, root: Path, every: int, keep: int, max_steps: int, resume_from: Checkpoint | None = None) -> None:
        self.root, self.every, self.keep, self.max_steps = root, every, keep, max_steps
        self.resume_from = resume_from
        self.stop_signal: int | None = None
        self.last_saved: Path | None = None

    def request_stop(self, signum: int, frame: Any = None) -> None:
        """Signal handler: finish the running iteration, checkpoint, stop; a second signal interrupts at once."""
        self.stop_signal = signum
        signal.signal(signum, signal.default_int_handler)
        log.warning("received %s: stopping after this iteration and saving a checkpoint", signal.Signals(signum).name)

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """Route SIGINT (Ctrl-C) to :meth:`request_stop` for the duration of the block."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT,)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.resume_from is None:
            return
        load_checkpoint(self.resume_from, pl_module.model, pl_module.optimizers().optimizer)
        extra = self.resume_from.state["extra"]
        pl_module.guard.load_state_dict(extra["numerics"])
        for callback in trainer.callbacks:
            if type(callback).__name__ in extra:
                callback.load_state_dict(extra[type(callback).__name__])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        iteration = pl_module.iteration
        due = (self.every > 0 and iteration % self.every == 0) or iteration == self.max_steps
        # under DDP every process holds the same weights and optimizer state: the main one writes them
        if (due or self.stop_signal is not None) and trainer.is_global_zero:
            extra = {type(cb).__name__: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}
            extra["numerics"] = pl_module.guard.state_dict()
            run_id = getattr(trainer.logger, "run_id", None)
            self.last_saved = save_checkpoint(
                self.root, iteration, pl_module.model, pl_module.optimizers().optimizer, run_id, extra, self.keep
            )
            log.info("saved checkpoint %s", self.last_saved)
        if self.stop_signal is not None:
            trainer.should_stop = True
