"""Log output in glog's line format, so tools written for Caffe logs read minicaffe's.

A line looks like ``I1126 19:30:00.123456 12345 solver.py:218] Iteration 100, lr = 0.01``:
severity letter, month and day, wall time with microseconds, thread id, source file and line.
Caffe's ``tools/extra/parse_log.py`` and similar scripts key on exactly this layout.

The library itself only logs to the ``minicaffe`` logger; ``setup_logging`` (used by the
command line) attaches a handler. ``GLOG_minloglevel`` (0 INFO ... 3 FATAL) is honoured as
in Caffe.
"""
import logging
import os
import sys
import threading
import time

LOGGER_NAME = "minicaffe"

_LETTER = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
           logging.ERROR: "E", logging.CRITICAL: "F"}
_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = time.localtime(record.created)
        usec = int((record.created - int(record.created)) * 1e6)
        letter = _LETTER.get(record.levelno, "I")
        head = (f"{letter}{t.tm_mon:02d}{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:"
                f"{t.tm_sec:02d}.{usec:06d} {threading.get_native_id():5d} "
                f"{record.filename}:{record.lineno}] ")
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return head + msg


class TqdmAwareHandler(logging.StreamHandler):
    """A stream handler that, while a tqdm bar is shown, prints above the bar."""
    bar = None

    def emit(self, record):
        if self.bar is None:
            return super().emit(record)
        try:
            self.bar.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def glog_level():
    """The level GLOG_minloglevel asks for (INFO when unset or unreadable)."""
    try:
        return _GLOG_LEVELS.get(int(os.environ.get("GLOG_minloglevel", "0")), logging.INFO)
    except ValueError:
        return logging.INFO


def setup_logging(stream=None, level=None):
    """Send the ``minicaffe`` logger to ``stream`` (stderr) in glog format; returns the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, "_minicaffe_cli", False):
            logger.removeHandler(h)
    handler = TqdmAwareHandler(stream if stream is not None else sys.stderr)
    handler._minicaffe_cli = True
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    logger.setLevel(glog_level() if level is None else level)
    return handler
