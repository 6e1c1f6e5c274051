"""SIGTERM handled like Ctrl-C, and short sections that a signal may not cut in two.

``kill``, systemd, Slurm and Kubernetes stop a process with SIGTERM, whose default action ends it
at once: a trial is left RUNNING and an export half swapped. Here both signals raise
``KeyboardInterrupt`` (``Terminated`` for SIGTERM, so that the exit status can say which), and
every interrupt takes the one path Ctrl-C takes. A signal that arrives inside ``held()`` (a trial
being created or taken from the queue, an export folder being swapped into place) is raised when
the section ends, so that what it holds is known when the interrupt is handled.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop as Ctrl-C stops, with the exit status of a terminated process."""


_pending: int | None = None
_depth = 0


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, _frame) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    raise _interruption(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through ``_handler`` (the main thread only: Python's rule)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A section that an interrupt may not split: a signal arriving inside is raised at its end.
    Only the main thread receives signals; other threads pass through unchanged."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise _interruption(signum)


def exit_status(e: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report a process a signal ended."""
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)


def said(e: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
