"""The two kinds of failure a run reports, at the bottom of the import graph.

Every stage raises a subclass of one of them, with a message that names the setting and the
fix; main.py maps the two to exit codes and prints the message as one line:

* `UserError` (exit 2): something the user gave cannot be used (a flag, a config.py value, a
  folder, a ratings file, a layer name). Nothing was computed or written.
* `RuntimeFailure` (exit 1): the run could not finish (weights that do not load, a cache that
  cannot be used). Completed cache files are kept; rerunning resumes.

Errors that a stage handles itself (a metric that cannot score a feature space becomes a
"failed" result) are plain ValueErrors of that stage.
"""
from __future__ import annotations

import contextlib
import signal
import threading

KEPT = "completed cache files are kept and a rerun resumes"


class UserError(ValueError):
    """A value the user gave cannot be used; the message names it and the fix. Exit code 2."""


class RuntimeFailure(RuntimeError):
    """The run could not finish; the message names what failed and the fix. Exit code 1."""


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). Like KeyboardInterrupt it is not an Exception:
    nothing catches it on the way up, the run's folder gets FAILED.txt, workers are stopped,
    and main.py exits 143 with one line."""


class ConfigError(UserError):
    """A config.py value is invalid; the message says which and how to fix it."""


class UsageError(UserError):
    """A flag or argument cannot be used: printed as one line, exit code 2."""


def one_line(exc: BaseException) -> str:
    """The message of `exc` as main.py prints it; one raised in a DataLoader worker arrives
    wrapped in a traceback, whose last line is the original message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def exit_status(exc: BaseException) -> tuple[int, str | None] | None:
    """(exit code, the one line to print or None) of an exception that ended a command, or
    None for one that is a bug (its traceback is the report)."""
    if isinstance(exc, UserError):
        return 2, f"error: {one_line(exc)}"
    if isinstance(exc, RuntimeFailure):
        return 1, f"error: {one_line(exc)}"
    if isinstance(exc, BrokenPipeError):       # e.g. `--list-layers … | head`
        return 0, None
    if isinstance(exc, OSError):               # a disk full or a folder removed while writing
        return 1, (f"error: {exc.strerror or exc} ({exc.filename or 'output'}); free space or fix "
                   f"the folder and rerun: {KEPT}")
    if isinstance(exc, KeyboardInterrupt):
        return 130, f"interrupted; {KEPT}"
    if isinstance(exc, Terminated):
        return 143, f"error: terminated (SIGTERM); {KEPT}"
    return None


RECEIVED = {"SIGTERM": False}      # a SIGTERM arrived (a caller of main() that goes on, as a
                                   # test suite does, can stop too: tests/conftest.py)


def _terminated(signum, frame):
    RECEIVED["SIGTERM"] = True
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises_terminated():
    """Within the block SIGTERM raises Terminated (on the main thread; elsewhere Python cannot
    install signal handlers and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
