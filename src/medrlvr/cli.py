"""The error boundary of the command-line entry points (``medrlvr.train``, ``medrlvr.evaluate``).

An error caused by the user's input (config value, data file, model path, checkpoint) prints one line
``error: <message naming the key, file or row>`` and exits with its code (2), without a traceback; a stop by
signal prints ``interrupted: <what was saved>`` and exits with 128 + the signal's number. Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from medrlvr.config import ConfigError
from medrlvr.data.schema import DatasetError
from medrlvr.models.loading import ModelLoadError
from medrlvr.training.checkpointing import CheckpointError
from medrlvr.training.numerics import NumericsError
from medrlvr.training.signals import Stopped

# Errors printed as one line, with this exit code. NumericsError is not an input error, but its message says
# everything (iteration and quantity) and the run's error tags keep the traceback.
EXIT_CODES: dict[type[Exception], int] = {
    ConfigError: 2, DatasetError: 2, ModelLoadError: 2, CheckpointError: 2, NumericsError: 1
}


def one_line(message: object) -> str:
    """``message`` with its line breaks and runs of spaces collapsed: a message from a library may span lines."""
    return " ".join(str(message).split())


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn the errors of :data:`EXIT_CODES`, :class:`Stopped` and KeyboardInterrupt into one line on stderr and
    an exit code; let every other exception through with its traceback."""
    try:
        yield
    except tuple(EXIT_CODES) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(next(code for kind, code in EXIT_CODES.items() if isinstance(err, kind)))
    except Stopped as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(130)
