"""One TensorRT logger for the whole process: TensorRT's messages go to Python logging, and the last errors are kept
so that a failed build, load or run can quote them in its one-line error.

TensorRT keeps the first logger it is given, so a logger per builder or runtime would leave every later one
unheard; and a ``trt.Logger`` prints to stdout, where "its log above says why" is not where the user looks.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("poet.tensorrt")

# TensorRT's severities (ILogger.Severity: INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4) as Python
# levels. Its INFO messages (memory use, load times) are debug detail for poet-edge's users.
_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG, 4: logging.DEBUG}
KEPT_ERRORS = 5


class TensorRTMessages:
    """What TensorRT logged: forwarded to the ``poet.tensorrt`` logger, its errors numbered and the last kept."""

    def __init__(self, keep: int = KEPT_ERRORS) -> None:
        self._errors: deque[str] = deque(maxlen=keep)
        self._error_count = 0
        self._watchers: list[tuple[tuple[str, ...], list[str]]] = []
        self._lock = threading.Lock()  # TensorRT logs from its own threads during a build

    def record(self, severity: int, message: str) -> None:
        """One message from TensorRT, of ``ILogger.Severity`` ``severity``."""
        level = _LEVELS.get(severity, logging.DEBUG)
        log.log(level, "TensorRT: %s", message)
        with self._lock:
            if level >= logging.ERROR:
                self._errors.append(message)
                self._error_count += 1
            for markers, lines in self._watchers:
                if any(marker in message for marker in markers):
                    lines.append(message)

    def mark(self) -> int:
        """A point in the log: :meth:`quote` of it names only the errors logged after it."""
        with self._lock:
            return self._error_count

    def errors_since(self, mark: int) -> list[str]:
        with self._lock:
            count = min(self._error_count - mark, len(self._errors))
            return list(self._errors)[len(self._errors) - count :] if count > 0 else []

    def quote(self, mark: int) -> str:
        """``": TensorRT said: ..."`` with the errors since ``mark``, for the end of an error message's clause."""
        errors = self.errors_since(mark)
        if not errors:
            return " (TensorRT logged no error)"
        return ": TensorRT said: " + " | ".join(error.strip() for error in errors)

    @contextmanager
    def watch(self, *markers: str) -> Iterator[list[str]]:
        """Collect every message, of any severity, that contains one of ``markers`` while the block runs."""
        lines: list[str] = []
        entry = (markers, lines)
        with self._lock:
            self._watchers.append(entry)
        try:
            yield lines
        finally:
            with self._lock:
                self._watchers.remove(entry)


MESSAGES = TensorRTMessages()
_logger: trt.ILogger | None = None
_logger_lock = threading.Lock()


def tensorrt_logger() -> trt.ILogger:
    """The process's one TensorRT logger, made on first use (TensorRT is imported only then); it feeds
    :data:`MESSAGES`."""
    global _logger
    with _logger_lock:
        if _logger is None:
            import tensorrt as trt

            class PythonLogger(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                    MESSAGES.record(int(severity), msg)

            _logger = PythonLogger()
        return _logger
