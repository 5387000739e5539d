"""The errors genlab raises for problems a user can fix.

Each one names the problem and the fix; the CLI prints them without a traceback.
"""

from __future__ import annotations


class GenlabError(Exception):
    """A problem with the user's input, data or files, with the fix in the message."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class DataError(GenlabError):
    """Data that cannot be found, read or used."""


class ConfigError(GenlabError):
    """A config value that is not allowed."""


class UnsafeFileError(GenlabError):
    """A weights or checkpoint file that is corrupt, truncated or not what it claims to be."""


class NonFiniteLossError(GenlabError):
    """Training produced a NaN or infinite loss and was stopped."""
