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
