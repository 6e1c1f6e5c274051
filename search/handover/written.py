"""What this tool wrote in a folder, so that it replaces that and nothing else, at any depth.

A folder that ``export-best`` or ``train --save`` writes carries a manifest (``.fmnist-export``,
``.fmnist-train``) naming every file it wrote with its SHA-256. Before it replaces anything there,
the folder is compared with its manifest: a file or folder the manifest does not list (a user's
``notes.txt`` inside ``trial-0/``), or a listed file whose content changed, is not ours to
replace, and the command is refused naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from fmnist.errors import UsageError

VERSION = 2  # version 1 (export-best before this) listed top-level names only
MAX_MANIFEST_BYTES = 1 << 20


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entries(folder: Path) -> Iterable[Path]:
    """Every path below ``folder``, folders included; links are not followed."""
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs) + sorted(files):
            yield Path(root, name)


def write_manifest(folder: Path, name: str, by: str, files: Iterable[Path] | None = None) -> None:
    """Record ``files`` (default: every file below ``folder``) as written by ``by``."""
    paths = [p for p in entries(folder) if p.is_file() and p.name != name] if files is None else list(files)
    listed = {p.relative_to(folder).as_posix(): digest(p) for p in paths}
    (folder / name).write_text(json.dumps({"written_by": by, "version": VERSION, "files": listed}, indent=1))


def read_manifest(folder: Path, name: str, flag: str) -> dict[str, str]:
    """{relative path: sha256} of what the tool wrote in ``folder``; an unreadable, hostile or
    older manifest is one line naming it (then nothing there may be replaced)."""
    path = folder / name
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        data = json.loads(path.read_text())
        if data.get("version") != VERSION:
            raise UsageError(f"{flag} {folder}: written by an earlier release that did not record each file "
                             f"it wrote, so none of it can be told from your own files; move the folder away "
                             f"or choose a new one")
        files = data["files"]
        if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
            raise ValueError("files is not a mapping of names to digests")
        return files
    except UsageError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise UsageError(f"{flag} {folder}: its {name} is unreadable, so what the tool wrote there cannot be "
                         f"told from your own files; choose a new folder") from None


def foreign(folder: Path, name: str, listed: dict[str, str], only: Iterable[str] | None = None) -> str | None:
    """The first path below ``folder`` that is not as its manifest ``name`` (holding ``listed``)
    records it (not listed, changed since, or a link), or None. ``only``: these relative paths alone."""
    ours_dirs = {parent.as_posix() for rel in listed for parent in Path(rel).parents if parent != Path(".")}
    paths = (folder / rel for rel in only) if only is not None else entries(folder)
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        if rel == name:
            continue
        if path.is_symlink():
            return rel
        if path.is_dir():
            if rel not in ours_dirs:
                return rel
        elif path.exists() and (rel not in listed or digest(path) != listed[rel]):
            return rel
    return None
