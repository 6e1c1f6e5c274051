"""Errors a user can fix: the CLI prints them as one line and exits 2."""


class FmnistError(Exception):
    """Bad input the user can correct (a file, a spec, an option). Never an internal bug."""


class DataError(FmnistError):
    """A data file is missing or malformed; the message names the file and the fault."""


class SpecError(FmnistError, ValueError):
    """A spec is invalid; the message names the field (``convs[2].filters: ...``)."""


def first_line(e: BaseException) -> str:
    """An exception as one line for a user: the first line of its message, else its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
