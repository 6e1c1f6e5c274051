"""Where ``export-best`` writes: the checks on ``--out`` and the swap that puts an export in place.

Torch-free, so that a folder export-best must not replace is refused before anything loads.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from fmnist.errors import UsageError

from search import signals
from search.handover import written

MARKER = ".fmnist-export"  # written in every export folder: what export-best may replace later


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target(out: Path, protected: Sequence[Path] = ()) -> None:
    """Refuse an ``--out`` whose replacement could lose anything export-best did not write.

    Allowed: a path that does not exist, an empty folder, or a folder holding an earlier export
    (its marker lists every entry it wrote, and nothing else is there). Never the current folder
    or one above it, and never a folder holding ``protected`` paths (the study's database, its artifacts).
    """
    target = out.resolve()
    if _is_within(Path.cwd().resolve(), target):
        raise UsageError(f"--out {out}: is the current folder or holds it; export into a new folder")
    for path in protected:
        if _is_within(Path(path).resolve(), target):
            raise UsageError(f"--out {out}: holds {path}, which export-best must not replace; "
                              f"export into a new folder")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; export-best writes a folder, "
                          f"choose another path")
    if not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise UsageError(f"--out {out}: folder is not empty and was not written by export-best "
                          f"(no {MARKER}); choose a new folder, or empty it yourself")
    other = written.foreign(out, MARKER, written.read_manifest(out, MARKER, "--out"))
    if other is not None:
        raise UsageError(f"--out {out}: holds {other!r}, which export-best did not write (or which changed "
                          f"since); move it out or choose a new folder")


def _readable_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def write_atomically(out: Path, fill: Callable[[Path], None], protected: Sequence[Path] = ()) -> None:
    """Fill a fresh temporary folder beside ``out``, then swap it in; on any failure remove it.

    Only what ``check_target`` allows is ever replaced (the caller checks before any work; this
    checks again just before the swap), and the replaced export is removed only after the new one
    is in place.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(_readable_mode())  # mkdtemp makes it private; an export is for others to read
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        fill(tmp)
        written.write_manifest(tmp, MARKER, "fmnist-search export-best")
        check_target(out, protected)  # nothing may have appeared there while the export was written
        with signals.held():  # an interrupt here must not leave the old export half replaced
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                out.rename(old / out.name)
                tmp.rename(out)
                shutil.rmtree(old)
            else:
                tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e}); nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
