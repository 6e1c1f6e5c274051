"""The same study with --pruner pareto and --pruner none: compute, wall time and hypervolume.

    python bench/pruning.py --data-dir ../shared/data/fashion-mnist [--trials 100] [-- --epochs 2 --prune-margin off]

Both studies use the same seed, the same number of sampled trials and the same budget (the top
rung: the whole training split for the CLI's default epochs, or the --epochs passed after --).
With `none` every trial trains to the top rung; with `pareto` most stop at a lower rung.
Compute is the total of training images processed by all trials, pruned ones included.
Hypervolume is in (validation error, log10 params), reference (0.30, 5M). Target: pareto needs at
most half the compute of none and keeps at least 98% of its hypervolume.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402

from search.cli import main as cli  # noqa: E402
from search.study import record  # noqa: E402
from search.view.quality import hypervolume, images_trained  # noqa: E402


def run(pruner: str, args, storage: str) -> list[optuna.trial.FrozenTrial]:
    """The arm's trained trials in order (skips cost nothing and are left out)."""
    argv = ["search", "--storage", storage, "--study", f"bench-{pruner}", "--trials", str(args.trials),
            "--pruner", pruner, "--no-enqueue-seeds", "--quiet", "--seed", str(args.seed), *args.extra]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    code = cli(argv)
    if code != 0:
        raise SystemExit(code)
    study = optuna.load_study(study_name=f"bench-{pruner}", storage=storage)
    return [t for t in study.trials if not record.is_skipped(t)]


def summary(trials: list[optuna.trial.FrozenTrial]) -> dict:
    states = [t.state.name for t in trials]
    # Time spent in trials, read from the storage, so a continued study counts all of its trials.
    wall = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start)
    return {"wall": wall, "images": images_trained(trials), "hv": hypervolume(trials),
            "hv_test": hypervolume(trials, "test_acc"), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--trials", type=int, default=100, help="per study (default 100, the CLI's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=15, help="also report the first k trials, k in steps of this")
    p.add_argument("--storage", help="default: a fresh SQLite file; an existing one continues both studies")
    p.add_argument("extra", nargs="*", help="more fmnist-search options, after --")
    args = p.parse_args()
    storage = args.storage or f"sqlite:///{Path(tempfile.mkdtemp()) / 'pruning.db'}"
    arms = {name: run(name, args, storage) for name in ("none", "pareto")}
    results = {name: summary(trials) for name, trials in arms.items()}
    print(f"\n{'pruner':8s} {'trials':>7s} {'pruned':>7s} {'images':>12s} {'trial min':>9s} "
          f"{'HV val':>8s} {'HV test':>8s}")
    for name, r in results.items():
        print(f"{name:8s} {r['complete'] + r['pruned']:>7d} {r['pruned']:>7d} {r['images']:>12,} "
              f"{r['wall'] / 60:>9.1f} {r['hv']:>8.4f} {r['hv_test']:>8.4f}")
    none, pareto = results["none"], results["pareto"]
    print(f"compute: pareto uses {none['images'] / pareto['images']:.2f}x less than none "
          f"(time in trials {none['wall'] / pareto['wall']:.2f}x); hypervolume kept: {pareto['hv'] / none['hv']:.1%}")
    # The same two studies cut after their first k trained trials: how the saving grows with length.
    print(f"\n{'first k':>7s} {'compute saved':>13s} {'HV kept':>8s}")
    for k in range(args.step, args.trials + args.step, args.step):
        k = min(k, args.trials)
        cut = {name: summary(trials[:k]) for name, trials in arms.items()}
        print(f"{k:>7d} {cut['none']['images'] / cut['pareto']['images']:>12.2f}x "
              f"{cut['pareto']['hv'] / cut['none']['hv']:>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
