"""structlog setup: console lines on a terminal, one JSON object per line otherwise (journald).

Contract: `configure(format, level)` is called once by the CLI before anything logs; modules
just do `log = structlog.get_logger(__name__)` and log fixed snake_case events with keys.
Output goes to stderr so that `nodehosts dump` keeps stdout for its data. Logging never
raises: a line that cannot be written is dropped.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StreamLogger:
    """structlog's PrintLogger, minus the exceptions: a log line that cannot be written (the
    reader of the pipe went away, a full disk, a closed stream) is dropped. Logging must never
    stop the daemon, nor keep a signal handler from stopping it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # the Node source logs from its worker thread

    def msg(self, message: str) -> None:
        try:
            with self._lock:
                self._stream.write(message + "\n")
                self._stream.flush()
        except Exception:  # nowhere left to report it
            pass

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg


def configure(
    log_format: str = "auto", level: str = "info", *, stream: TextIO | None = None
) -> None:
    """Route structlog (and the stdlib loggers of libraries) to one stream in one style."""
    out = stream if stream is not None else sys.stderr
    use_console = log_format == "console" or (log_format == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    # One writer for every logger: its lock makes lines from several threads take turns (and
    # a logger made per call, as structlog's lazy proxies do, costs no lock of its own).
    writer = _StreamLogger(out)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=False,
    )
    # urllib3 and the kubernetes client log through the stdlib; keep their noise at warning.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(name)s: %(message)s")
    logging.raiseExceptions = False  # a failed write of a library's log line is dropped too
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
