"""Helpers the tests share: a small search through main(), a CLI process, an HTTP request."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from search.cli import main

# Cheap candidates only: --max-flops skips the heavy ones before training, at no cost.
FAST = ["--epochs", "1", "--val-size", "100", "--max-flops", "3000000", "--quiet", "--seed", "1", "--no-warm-start"]


def small_search(synth_dir: Path, url: str, *extra: str, study: str = "s") -> int:
    """A few cheap trials of a search through main(), on the synthetic data."""
    return main(["--data-dir", str(synth_dir), "--storage", url, "--study", study, *FAST, *extra])


def cli(*argv: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """``fmnist-search ARGV`` as its own process, text pipes for its output."""
    return subprocess.Popen([sys.executable, "-m", "search.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kwargs)


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes]:
    """(status, body) of one HTTP request; an error status is returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
