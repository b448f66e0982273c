"""User-facing errors: the CLI prints them as one line and exits 2 (no traceback)."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a study file, a CLI flag, a results location. From Python it is
    ``overnight.StudyError``; the message names the file or option, the field and the value.

    >>> import orchestrator as overnight
    >>> try:
    ...     overnight.run({"name": "demo", "workload": "synthetic"}, scale="smoke", set={"lrr": 0.1})
    ... except overnight.StudyError as e:
    ...     print(e)
    --set: lrr: unknown parameter (did you mean `lr`?) of workload synthetic (see `overnight describe synthetic`)
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.bare = message
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class LockedError(UserError):
    """Another driver holds the results directory."""
