"""How `gpt2` shows the library's log records: the message alone, as the commands print.

Library modules log through `logging.getLogger(__name__)` and never print. The command line
shows INFO records (a training run's console lines) on stdout, as its other output, and every
other level (warnings, errors, `--verbose`'s DEBUG) on stderr, each above any tqdm progress bar.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("gpt2", "shared", "functional_impl", "haiku_impl", "keras_impl")
"""The loggers configured: this project's packages, not JAX's or TensorFlow's."""


class ConsoleHandler(logging.Handler):
    """Message-only lines: INFO to stdout, the other levels to stderr (looked up per record, so
    a redirected `sys.stdout` receives them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            stream = sys.stdout if record.levelno == logging.INFO else sys.stderr
            tqdm = sys.modules.get("tqdm")  # no bar is shown unless tqdm was imported
            if tqdm is not None:
                tqdm.tqdm.write(message, file=stream)  # clears and redraws the bars around it
            else:
                stream.write(message + "\n")
            stream.flush()
        except (
            RecursionError,
            BrokenPipeError,
        ):  # a closed pipe ends the command as a print's would
            raise
        except Exception:
            self.handleError(record)


def configure(level: int = logging.INFO) -> None:
    """Show this project's records of `level` and above; calling it again replaces the setup."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
            logger.removeHandler(handler)
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False  # shown once, here, whatever the root logger does


def level_for(verbose: bool, quiet: bool) -> int:
    """`--verbose`: DEBUG; `--quiet`: WARNING (no progress lines); neither: INFO."""
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
