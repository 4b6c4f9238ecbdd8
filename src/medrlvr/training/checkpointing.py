"""Resumable training checkpoints: atomic, checksummed, last K kept.

A checkpoint is a folder ``<output_dir>/checkpoints/iter_XXXXX/``. One process (``trainer.strategy=auto``
or ``ddp``, where every process holds the same state) writes

- ``trainable.safetensors``: every parameter with ``requires_grad`` (LoRA adapters + value head, or the
  full actor and critic); frozen weights are rebuilt from the config;
- ``optimizer.pt``: the optimizer's ``state_dict`` (read back with ``torch.load(weights_only=True)``);

under DeepSpeed every process writes, through DeepSpeed's own ``save_checkpoint``,

- ``deepspeed/``: the engine's sharded checkpoint (trainable weights and each process's ZeRO optimizer
  partition; frozen weights are rebuilt from the config), read back by the engine's ``load_checkpoint``;
- ``rng_rank_XXXXX.json``: that process's RNG states;

and in both cases the first process adds

- ``state.json``: iteration, MLflow run id, layout (format, processes, ZeRO stage), RNG states (one
  process), callback state, the numerics guard's and the learning-rate schedule's state, and the run's resolved
  config (checked on resume, see :mod:`medrlvr.training.resume`);
- ``manifest.json``, written last: size and SHA-256 of every other file in the folder.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medrlvr.training.signals import StopSignals
from medrlvr.training.strategies import deepspeed_engine

log = logging.getLogger(__name__)

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
MANIFEST = "manifest.json"
DEEPSPEED = "deepspeed"  # the tag (sub-folder) DeepSpeed's engine writes its shards into
FULL_LAYOUT = {"format": "full"}
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
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/iter_<iteration>`` atomically, then delete all but the newest ``keep`` checkpoints.
    ``config`` (the run's resolved config) is stored in ``state.json``, to be checked on resume.

    Raises :class:`CheckpointError` (writing nothing) if a trainable tensor holds NaN or inf.
    """
    tensors = {name: t.contiguous().cpu() for name, t in trainable_state(model).items()}
    _refuse_non_finite(iteration, [name for name, t in tensors.items() if not torch.isfinite(t).all()])
    final = _final(root, iteration)
    staging = _fresh(root / f".tmp-{final.name}-{os.getpid()}")
    try:
        save_file(tensors, str(staging / TRAINABLE))
        torch.save(optimizer.state_dict(), staging / OPTIMIZER)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    state = {
        "iteration": iteration, "run_id": run_id, "layout": FULL_LAYOUT, "rng": rng_state(), "extra": extra or {},
        "config": config,
    }
    return _commit(staging, final, state, keep)


def _refuse_non_finite(iteration: int, bad: list[str]) -> None:
    if bad:
        raise CheckpointError(f"refusing to checkpoint iteration {iteration}: non-finite values in {bad[:5]}")


def _final(root: Path, iteration: int) -> Path:
    return root / f"{_PREFIX}{iteration:05d}"


def _fresh(folder: Path) -> Path:
    """An empty ``folder`` (and its parents), replacing a leftover of an earlier crash."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` but the manifest, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _commit(staging: Path, final: Path, state: dict[str, Any], keep: int) -> Path:
    """Add ``state.json`` and the manifest (size and SHA-256 of every file) to ``staging``, fsync it, rename it
    to ``final`` and prune ``final``'s folder to the newest ``keep`` checkpoints. ``staging`` is removed if
    anything fails."""
    root = final.parent
    try:
        (staging / STATE).write_text(json.dumps(state))
        names = _files(staging)
        files = {name: {"bytes": (staging / name).stat().st_size, "sha256": _sha256(staging / name)} for name in names}
        (staging / MANIFEST).write_text(json.dumps({"iteration": state["iteration"], "files": files}, indent=1))
        for name in (*names, MANIFEST):
            _fsync(staging / name)
        for folder in sorted({(staging / name).parent for name in names}, reverse=True):
            _fsync(folder)
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(root, keep, state["run_id"])
    return final


_UNREADABLE = object()  # the owner of a checkpoint whose state.json cannot be read


def prune(root: Path, keep: int, run_id: str | None) -> None:
    """Delete all but the newest ``keep`` checkpoints of MLflow run ``run_id`` (and those whose ``state.json``
    cannot be read), and any leftover temporary folders. Checkpoints of other runs are never touched."""
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    own = [folder for folder in _candidates(root) if _owner(folder) in (run_id, _UNREADABLE)]
    for old in own[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _owner(folder: Path) -> object:
    """The MLflow run id in ``folder``'s ``state.json`` (None when written without one), or ``_UNREADABLE``."""
    try:
        return json.loads((folder / STATE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return _UNREADABLE


def check_owner(root: Path, run_id: str | None) -> None:
    """Refuse (CheckpointError) a training that would write checkpoints into ``root`` beside those of another
    MLflow run: a fresh run (``run_id`` None) needs a folder without checkpoints, a resumed one a folder
    holding only its own. Checkpoints whose ``state.json`` cannot be read are not counted."""
    owners = {folder.name: _owner(folder) for folder in _candidates(root)}
    others = {name: owner for name, owner in owners.items() if owner not in (run_id, _UNREADABLE)}
    if not others:
        return
    newest, owner = next(iter(others.items()))
    if run_id is None:
        raise CheckpointError(
            f"trainer.output_dir: {root} holds checkpoints of MLflow run {owner} (newest {newest}): continue that"
            " run with resume=auto, or start a new one in another trainer.output_dir (or delete that folder)"
        )
    raise CheckpointError(
        f"trainer.output_dir: {root} holds checkpoints of MLflow run {owner} (newest {newest}), not of the run"
        f" being resumed ({run_id}): resume into another trainer.output_dir"
    )


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
    _check_layout(checkpoint, FULL_LAYOUT)
    tensors = load_file(str(checkpoint.path / TRAINABLE))
    _check_names(checkpoint.path / TRAINABLE, set(tensors), model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(checkpoint.path / OPTIMIZER, weights_only=True, map_location="cpu"))
    set_rng_state(checkpoint.state["rng"])


def _check_layout(checkpoint: Checkpoint, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint written under another strategy, number of processes or ZeRO stage."""
    found = checkpoint.state.get("layout", FULL_LAYOUT)  # checkpoints older than the layout are full ones
    if found != expected:
        raise CheckpointError(
            f"{checkpoint.path / STATE}: written with layout {found}, this run needs {expected}:"
            " resume with the trainer settings (strategy, devices, ZeRO stage) the checkpoint was written with"
        )


def _check_names(source: Path, saved: set[str], model: torch.nn.Module) -> None:
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if saved != expected:
        missing, unknown = sorted(expected - saved), sorted(saved - expected)
        raise CheckpointError(
            f"{source} does not match the model (missing {missing[:3]}, unexpected {unknown[:3]}):"
            " was it written with another model config?"
        )


def _rng_file(rank: int) -> str:
    return f"rng_rank_{rank:05d}.json"


def _sharded_layout(engine: Any, world_size: int) -> dict[str, Any]:
    return {"format": DEEPSPEED, "processes": world_size, "zero_stage": engine.zero_optimization_stage()}


def save_sharded_checkpoint(
    root: Path,
    iteration: int,
    engine: Any,
    strategy: Any,
    model: torch.nn.Module,
    run_id: str | None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/iter_<iteration>`` from a DeepSpeed ``engine`` atomically (collective: every process calls).

    Each process writes its shards (DeepSpeed's ``save_checkpoint``) and RNG states into one hidden staging
    folder; after a barrier the first process adds ``state.json`` and the manifest, renames the folder into
    place and prunes to the newest ``keep``. Raises :class:`CheckpointError` on every process, writing
    nothing, if any process holds a non-finite trainable value.
    """
    local = [name for name, p in model.named_parameters() if p.requires_grad and not _finite(p)]
    if strategy.reduce_boolean_decision(bool(local), all=False):
        _refuse_non_finite(iteration, local or ["(on another process)"])
    final = _final(root, iteration)
    staging = root / f".tmp-{final.name}"
    if strategy.is_global_zero:
        _fresh(staging)
    strategy.barrier()
    engine.save_checkpoint(
        str(staging), tag=DEEPSPEED, client_state={}, save_latest=False, exclude_frozen_parameters=True
    )
    (staging / _rng_file(strategy.global_rank)).write_text(json.dumps(rng_state()))
    strategy.barrier()
    if strategy.is_global_zero:
        state = {
            "iteration": iteration,
            "run_id": run_id,
            "layout": _sharded_layout(engine, strategy.world_size),
            "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad),
            "extra": extra or {},
            "config": config,
        }
        _commit(staging, final, state, keep)
    strategy.barrier()
    return final


def _finite(param: torch.nn.Parameter) -> bool:
    """Whether this process's values of ``param`` are finite (its partition under ZeRO-3)."""
    return bool(torch.isfinite(getattr(param, "ds_tensor", param)).all())


def load_sharded_checkpoint(
    checkpoint: Checkpoint, engine: Any, model: torch.nn.Module, rank: int, world_size: int
) -> None:
    """Restore weights and ZeRO optimizer partitions through DeepSpeed's ``load_checkpoint``, and this
    process's RNG states (collective: every process calls, after the engine is set up)."""
    _check_layout(checkpoint, _sharded_layout(engine, world_size))
    _check_names(checkpoint.path / STATE, set(checkpoint.state["trainable"]), model)
    loaded, _ = engine.load_checkpoint(
        str(checkpoint.path),
        tag=DEEPSPEED,
        load_module_strict=False,  # frozen weights are not in the checkpoint (rebuilt from the config)
        load_optimizer_states=True,
        load_lr_scheduler_states=False,
    )
    if loaded is None:
        raise CheckpointError(f"{checkpoint.path / DEEPSPEED}: DeepSpeed found no checkpoint to load")
    set_rng_state(json.loads((checkpoint.path / _rng_file(rank)).read_text()))


class CheckpointCallback(L.Callback):
    """Saves after every ``every`` iterations and the last; on a signal (``signals``) saves and stops after the
    iteration.

    Under DeepSpeed every process writes its shards (:func:`save_sharded_checkpoint`); otherwise the main
    process writes everything (:func:`save_checkpoint`). ``resume_from`` is loaded on every process when
    training starts (the engine and the optimizer exist by then). The numerics guard, the learning-rate
    schedule and callbacks with a ``state_dict`` (e.g. the stage tracker) are saved in the checkpoint's ``extra``
    state, ``config`` (the run's resolved config) in its ``config`` state.
    """

    def __init__(
        self,
        root: Path,
        every: int,
        keep: int,
        max_steps: int,
        resume_from: Checkpoint | None = None,
        signals: StopSignals | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.root, self.every, self.keep, self.max_steps = root, every, keep, max_steps
        self.resume_from = resume_from
        self.signals = signals or StopSignals()
        self.config = config
        self.last_saved: Path | None = None

    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped training, if any."""
        return self.signals.requested

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Load ``resume_from`` on every process. Lightning calls this before the module's own
        ``on_train_start``, which pushes the loaded policy into the rollout engine."""
        if self.resume_from is None:
            return
        engine = deepspeed_engine(pl_module)
        if engine is None:
            load_checkpoint(self.resume_from, pl_module.model, pl_module.optimizers().optimizer)
        else:
            load_sharded_checkpoint(self.resume_from, engine, pl_module.model, trainer.global_rank, trainer.world_size)
        extra = self.resume_from.state["extra"]
        pl_module.guard.load_state_dict(extra["numerics"])
        if "lr_scheduler" in extra:  # checkpoints from before learning-rate schedules ran at constant rates
            pl_module.load_scheduler_state(extra["lr_scheduler"])
        for callback in trainer.callbacks:
            if type(callback).__name__ in extra:
                callback.load_state_dict(extra[type(callback).__name__])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """From the first iteration on, a signal waits for the end of the running iteration."""
        self.signals.deferring = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        iteration = pl_module.iteration
        due = (self.every > 0 and iteration % self.every == 0) or iteration == self.max_steps
        # a signal may reach only some processes: all of them save (a collective under DeepSpeed) and stop
        if trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False):
            self.signals.requested = self.stop_signal or signal.SIGTERM
        if due or self.stop_signal is not None:
            self.last_saved = self._save(trainer, pl_module, iteration)
        if self.stop_signal is not None:
            trainer.should_stop = True

    def _save(self, trainer: L.Trainer, pl_module: Any, iteration: int) -> Path | None:
        """Under DeepSpeed every process writes its shards; otherwise (one process, or DDP, where every
        process holds the same weights and optimizer state) the main one writes everything."""
        extra = {type(cb).__name__: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()}
        extra["numerics"] = pl_module.guard.state_dict()
        extra["lr_scheduler"] = pl_module.scheduler_state()
        run_id = getattr(trainer.logger, "run_id", None)
        engine = deepspeed_engine(pl_module)
        if engine is not None:
            path = save_sharded_checkpoint(
                self.root, iteration, engine, trainer.strategy, pl_module.model, run_id, extra, self.keep, self.config
            )
        elif trainer.is_global_zero:
            optimizer = pl_module.optimizers().optimizer
            path = save_checkpoint(
                self.root, iteration, pl_module.model, optimizer, run_id, extra, self.keep, self.config
            )
        else:
            return None
        if trainer.is_global_zero:
            log.info("saved checkpoint %s", path)
        return path
