"""Where collapse's log lines go: one setup for the command line and the Python API.

The CLI configures the root logger (``collapse -v`` for debug lines). The API
(``collapse.run`` in a script or a notebook) prints the same lines, in the
same format, when the caller has configured no logging of its own; once the
caller does, the API's handler steps aside and the caller's setup decides.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(message)s"
DATEFMT = "%H:%M:%S"
# Libraries whose INFO lines drown collapse's own: warnings still show.
CHATTY = ("urllib3", "filelock", "datasets", "httpx", "fontTools")  # fontTools: a line per table subset in every PDF
# MLflow's own retries log a multi-line warning per attempt; collapse logs the one line that matters.
NOISY = ("mlflow", "alembic", "sqlalchemy")

_api_handler: logging.Handler | None = None


def quiet_libraries() -> None:
    """Warnings and errors only from the libraries in CHATTY and NOISY (errors only)."""
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)


def configure_cli_logging(verbose: bool = False) -> None:
    """The command line's logging: every logger's INFO (DEBUG with ``verbose``) lines on stderr, timestamped."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, datefmt=DATEFMT)
    quiet_libraries()


def ensure_api_logging() -> bool:
    """For ``collapse.run``: print collapse's INFO lines on stderr, formatted as the CLI's,
    unless the caller has set up logging (a handler on the root logger or on ``collapse``).

    Returns whether the API's handler is in place. Idempotent; removes its own
    handler again once the caller has configured the root logger."""
    global _api_handler
    logger = logging.getLogger("collapse")
    root = logging.getLogger()
    if _api_handler is not None:
        if root.handlers:  # the caller configured logging since: theirs decides, no line twice
            logger.removeHandler(_api_handler)
            _api_handler = None
            return False
        if _api_handler in logger.handlers:
            return True
        _api_handler = None
    if root.handlers or logger.handlers:
        return False
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATEFMT))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    quiet_libraries()
    _api_handler = handler
    return True


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stderr`` (a notebook kernel or a test may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass
