"""Errors a user can fix: the CLI prints them as one line and exits 2."""
from __future__ import annotations


class UsageError(Exception):
    """Bad input the user can correct (a file, a spec, an option, an argument). Never an internal bug.

    ``option`` names the argument at fault as the library calls it (``val_size``); the library's
    message does not spell a command-line flag, the CLI does (``--val-size``): see ``flag``.
    """

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option

    def __str__(self) -> str:
        message = str(self.args[0]) if self.args else ""
        return f"{self.option}: {message}" if self.option else message


class DataError(UsageError):
    """A data file is missing or malformed; the message names the file and the fault."""


class SpecError(UsageError, ValueError):
    """A spec is invalid; the message names the field (``convs[2].filters: ...``)."""


def flag(e: UsageError) -> str:
    """The error as the command line says it: the option spelled as its flag."""
    message = str(e.args[0]) if e.args else ""
    return f"--{e.option.replace('_', '-')}: {message}" if e.option else str(e)


def first_line(e: BaseException) -> str:
    """An exception as one line for a user: the first line of its message, else its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
