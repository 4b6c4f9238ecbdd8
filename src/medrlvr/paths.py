"""Where the project's files live: its Hydra config and sweep folders, and the MLflow store a run uses by default."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` folder: ``$MEDRLVR_CONFIG_DIR``, else the copy installed in the package, else the repo's."""
    if "MEDRLVR_CONFIG_DIR" in os.environ:
        return Path(os.environ["MEDRLVR_CONFIG_DIR"]).resolve()
    installed = Path(__file__).parent / "conf"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "conf"


def sweeps_dir() -> Path:
    """The ``sweeps/`` folder (Hydra group ``sweep``): the copy installed in the package, else the repo's."""
    installed = Path(__file__).parent / "sweeps"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "sweeps"


def default_tracking_uri() -> str:
    """SQLite store in the working directory (MLflow 3 refuses the old ``./mlruns`` file store)."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go to ``mlartifacts/`` beside the database; other stores keep their default."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None
