"""Checks that fail fast, before a model is loaded or an MLflow run is opened, so nothing is half-written."""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medrlvr.config import ConfigError


def check_output_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable; ConfigError naming the folder otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(f"trainer.output_dir: cannot write to {path} ({err.strerror or err})") from err
    return path


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (ConfigError) when an HTTP tracking server does not answer, instead of retrying for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"logger.tracking_uri: cannot reach the MLflow server at {uri} ({err})") from err
