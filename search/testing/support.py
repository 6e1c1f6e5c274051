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


def run_search(synth_dir: Path, db: Path, *extra: str, study: str = "s") -> int:
    """``small_search`` on a SQLite file."""
    return small_search(synth_dir, f"sqlite:///{db}", *extra, study=study)


def load_study(db: Path, study: str = "s"):
    import optuna
    return optuna.load_study(study_name=study, storage=f"sqlite:///{db}")


# A subprocess that opens a storage when every other one of ``n`` is ready: workers racing to create its tables.
OPENER = """
import os, sys, time
from pathlib import Path
from search.study.storage import open_storage
ready, n = Path(sys.argv[2]), int(sys.argv[3])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < n:  # a barrier: every process has imported everything
    time.sleep(0.001)
open_storage(sys.argv[1])
"""

# A worker's heartbeat and the grace after which others fail its trial, shortened for tests (30 s and
# 4 min in use) so that a pause of a few seconds makes a trial stale.
BEAT, GRACE = 1, 3
SHORT_GRACE = (f"import sys, search.study.storage as s; s.HEARTBEAT_S, s.GRACE_S = {BEAT}, {GRACE}; "
               f"from search.cli import main; sys.exit(main(sys.argv[1:]))")
MAX_FLOPS = 3_000_000  # cheap candidates only: the others are skipped at no cost


def search_workers(url: str, synth_dir, tmp_path, study: str, trials: int, epochs: int = 12, workers: int = 2,
                   short_grace: bool = False, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """``fmnist-search --workers N [EXTRA]`` on ``url``: cheap candidates, no pruning, weights in tmp_path."""
    start = [sys.executable, "-c", SHORT_GRACE] if short_grace else [sys.executable, "-m", "search.cli"]
    cmd = [*start, "--data-dir", str(synth_dir), "--storage", url, "--study", study,
           "--quiet", "--val-size", "100", "--epochs", str(epochs), "--max-flops", str(MAX_FLOPS), "--trials", str(trials),
           "--no-enqueue-seeds", "--no-warm-start", "--pruner", "none", "--workers", str(workers),
           "--artifact-dir", str(tmp_path / "weights"), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
