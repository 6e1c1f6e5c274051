"""How long the commands that only look take to answer, against the import of torch alone (the
baseline, measured in the same run): `show`, `presets` and `dashboard` import no torch, so each
should take a fraction of what a command that trains pays before it starts; nor do `export-best`,
`train` and the search before they refuse what they were given (timed: export-best --trial of a
trial the study does not have, train --preset of no preset).

    python bench/startup.py --storage sqlite:///studies/fmnist.db --study fmnist [--runs 5]

Each command runs --runs times as its own process; the median wall time is printed, and its ratio
to the baseline's. `dashboard` is timed until it prints its URL (then stopped).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(argv: list[str], until_line: bool = False, code: int = 0) -> float:
    """Seconds from starting ``argv`` to its exit (or, with ``until_line``, to its first line of output)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if until_line:
        line = proc.stdout.readline()
        took = time.perf_counter() - start
        proc.terminate()
        proc.wait(timeout=30)
        if "/dashboard" not in line:
            sys.exit(f"bench/startup.py: the dashboard did not start: {line.strip() or 'no output'}")
        return took
    proc.communicate()
    if proc.returncode != code:
        sys.exit(f"bench/startup.py: {' '.join(argv[3:])} exited with {proc.returncode}, not {code}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if args.runs < 1:
        p.error(f"--runs must be at least 1, got {args.runs}")
    cli = [sys.executable, "-m", "search.cli"]
    store = ["--storage", args.storage, "--study", args.study]
    cases = [("import torch (baseline)", [sys.executable, "-c", "import torch"], False, 0),
             ("fmnist-search show", [*cli, "show", *store], False, 0),
             ("fmnist-search presets", [*cli, "presets"], False, 0),
             ("fmnist-search dashboard (to its URL)", [*cli, "dashboard", *store, "--port", "0"], True, 0),
             ("export-best --trial 999999 (refused)", [*cli, "export-best", *store, "--trial", "999999"], False, 2),
             ("train --preset nope (refused)", [*cli, "train", "--preset", "nope"], False, 2)]
    base = None
    print(f"{'command':40s} {'median s':>9s} {'x baseline':>10s}   ({args.runs} runs each)")
    for name, argv, until_line, code in cases:
        median = statistics.median(wall(argv, until_line, code) for _ in range(args.runs))
        base = base or median
        print(f"{name:40s} {median:9.2f} {median / base:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
