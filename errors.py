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
