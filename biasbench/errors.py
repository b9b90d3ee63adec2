"""One exception type for problems the user can fix (bad YAML, unknown alias, missing binary).

The CLI prints these as a single clear message and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class BiasbenchError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class ConfigError(BiasbenchError):
    """A task or voice-pool file is malformed; the message names the file and field."""

    def __init__(self, path, field: str | None, problem: str):
        self.path, self.field, self.problem = path, field, problem
        where = f"{path}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


class RunStopped(BiasbenchError):
    """A run that stopped part way for a reason the user can fix (a full disk): what was stored
    is kept and `--resume` continues it. The CLI exits 3, like a run that left requests unanswered."""

    exit_code = 3


class Stopped(KeyboardInterrupt):
    """A signal asking the process to end (SIGTERM, SIGHUP), raised in the main thread and
    handled like Ctrl-C: a line, exit 128 + the signal's number, and a run that resumes."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
