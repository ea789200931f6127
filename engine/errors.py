"""Entry-point errors: a known bad input ends the program with one line ``error: <message>`` and exit code 2.

``HYDRA_FULL_ERROR=1`` lets the exception through with its traceback (as Hydra does for its own errors).
Unknown exception types are bugs and keep their traceback. ``OutputFolderCheck`` (a Hydra callback, set in
conf/config.yaml) does the same for output folders that cannot be written, before Hydra makes its run folder
in them.
"""
from __future__ import annotations

import functools
import os
import sys
import tempfile

from hydra.experimental.callback import Callback

EXIT_BAD_INPUT = 2


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is meant for the user: bad config, files, data, results, a diverged run."""
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from core.registry import RegistryError
    from engine.results import ResultsError
    from engine.trainer import NonFiniteLossError

    return ConfigError, CheckpointError, ResultsError, RegistryError, NonFiniteLossError, OSError, ValueError


def exits_on_bad_input(main):
    """Wrap an entry point: known errors print ``error: <message>`` to stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except user_errors() as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


def one_line(e: BaseException) -> str:
    """The exception's message on one line (an OS error as ``<file>: <reason>``)."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


class OutputFolderCheck(Callback):
    """``paths.output_dir`` and ``paths.results_dir`` must be folders this process can write, else
    ``error: ...`` and exit 2 before anything runs."""

    def on_run_start(self, config, **kwargs) -> None:
        for key in ("output_dir", "results_dir"):
            check_writable(config.paths[key], f"paths.{key}")

    on_multirun_start = on_run_start


def check_writable(folder: str, key: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {key}={folder} cannot be written ({e.strerror}); choose a writable folder", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_BAD_INPUT)
