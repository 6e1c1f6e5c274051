"""A time-boxed study on the real data: its front, hypervolume and the seed models it dominates.

    python bench/search.py --data-dir ../shared/data/fashion-mnist [--minutes 10] [--storage URL]

The budget is the CLI's: the top rung sized to the minutes (--timeout), rungs below it, warm
starts first. Hypervolume is in (validation error, log10 params) with reference point (error 0.30,
5M params); the same on test error is printed beside it for information (never used to select).
The seed models are compared on their reported accuracy (see search/view/front.py), so they are not
trained here (--no-enqueue-seeds): all the minutes go to the search. bench/side_by_side.py runs
this against a plain Optuna script.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402

from search.cli import main as cli  # noqa: E402
from search.view.quality import hypervolume, images_trained  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--storage", help="default: a fresh SQLite file in a temporary folder")
    p.add_argument("--study", default="bench-search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("extra", nargs="*", help="more fmnist-search options, after --")
    args = p.parse_args()
    storage = args.storage or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    start = time.perf_counter()
    argv = ["search", "--storage", storage, "--study", args.study, "--trials", "100000",
            "--timeout", str(int(args.minutes * 60)), "--no-enqueue-seeds", "--quiet",
            "--seed", str(args.seed), *args.extra]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    code = cli(argv)
    if code not in (0, 130):
        return code
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=args.study, storage=storage)
    print(f"\nwall {wall / 60:.1f} min, {len(study.trials)} trials, {images_trained(study.trials):,} training images")
    print(f"hypervolume (val error, log10 params; ref 0.30, 5M): {hypervolume(study.trials):.4f}")
    print(f"hypervolume on test error, for information:        {hypervolume(study.trials, 'test_acc'):.4f}")
    return 0  # the front table was printed by the search itself


if __name__ == "__main__":
    sys.exit(main())
