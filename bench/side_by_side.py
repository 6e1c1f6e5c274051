"""fmnist-search against a plain Optuna script (bench/baseline_optuna.py), side by side on the real data.

    python bench/side_by_side.py --data-dir ../shared/data/fashion-mnist --minutes 10 --seeds 0 1 2

For each seed both run at the same time, one thread each, for the same minutes; what counts is what
each had finished when the minutes were up (trials ending later are left out, for both). Printed
per seed: trials finished, hypervolume in (validation error, log10 params) and in (test error,
log10 params), reference (0.30, 5M), and the ratio ours / baseline. Issue 9's target: >= 1.3x on
test error for each seed. Every run is printed, not the best.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402

from search.study import record  # noqa: E402
from search.view.quality import hypervolume  # noqa: E402

HERE = Path(__file__).resolve().parent


def commands(args, seed: int, storage: str) -> dict[str, list[str]]:
    ours = [sys.executable, "-m", "search.cli", "search", "--data-dir", args.data_dir, "--storage", storage,
            "--study", "ours", "--trials", "100000", "--timeout", str(int(args.minutes * 60)),
            "--no-enqueue-seeds", "--quiet", "--seed", str(seed), *args.extra]
    baseline = [sys.executable, str(HERE / "baseline_optuna.py"), "--data-dir", args.data_dir, "--storage",
                storage, "--study", "baseline", "--minutes", str(args.minutes), "--seed", str(seed)]
    return {"ours": ours, "baseline": baseline}


def finished_by(storage: str, study: str, cutoff: dt.datetime) -> list:
    trials = optuna.load_study(study_name=study, storage=storage).trials
    return [t for t in trials if t.datetime_complete is not None and t.datetime_complete <= cutoff]


def time_split(trials, wall: float) -> str:
    """Shares of the wall time: training, evaluating (rung subsets, the validation split, the test
    set), and the rest (loading, planning, sampling, storage, model building)."""
    train = sum(t.user_attrs.get(record.TRAIN_SECONDS, 0) for t in trials)
    evaluate = sum(t.user_attrs.get(record.EVAL_SECONDS, 0) for t in trials)
    return (f"training {train / wall:.0%}, evaluating {evaluate / wall:.0%}, "
            f"overhead {max(0.0, wall - train - evaluate) / wall:.0%}")


def run_seed(args, seed: int, folder: Path) -> dict:
    storage = f"sqlite:///{folder / f'side-{seed}.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    optuna.create_study(study_name="init", storage=storage)  # tables made once, before the two start
    start = dt.datetime.now()
    procs = {name: subprocess.Popen(cmd, env=env, stdout=open(folder / f"{name}-{seed}.log", "w"),
                                    stderr=subprocess.STDOUT)
             for name, cmd in commands(args, seed, storage).items()}
    for p in procs.values():
        p.wait()
    cutoff = start + dt.timedelta(minutes=args.minutes)
    out = {}
    for name in procs:
        trials = finished_by(storage, name, cutoff)
        done = [t for t in trials if t.state.name == "COMPLETE"]
        if name == "ours":
            split = time_split(finished_by(storage, name, dt.datetime.max), args.minutes * 60)
            print(f"seed {seed}, ours: of {args.minutes:g} min, {split}")
        out[name] = {"trials": len(trials), "complete": len(done), "hv": hypervolume(trials),
                     "hv_test": hypervolume(trials, record.TEST_ACC), "rc": procs[name].returncode,
                     "best": max((t.user_attrs.get(record.TEST_ACC, 0) for t in done), default=0)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folder", help="where the databases and logs go (default: a new temporary folder)")
    p.add_argument("extra", nargs="*", help="more fmnist-search options, after --")
    args = p.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="side-by-side-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"databases and logs in {folder}")
    print(f"{'seed':>4} {'arm':9} {'finished':>8} {'complete':>8} {'best test':>9} {'HV val':>7} {'HV test':>7} {'test ratio':>10}")
    for seed in args.seeds:
        r = run_seed(args, seed, folder)
        for name in ("ours", "baseline"):
            x = r[name]
            ratio = x["hv_test"] / r["baseline"]["hv_test"] if r["baseline"]["hv_test"] else float("inf")
            print(f"{seed:>4} {name:9} {x['trials']:>8} {x['complete']:>8} {100 * x['best']:>8.2f}% "
                  f"{x['hv']:>7.4f} {x['hv_test']:>7.4f} {ratio if name == 'ours' else 1:>9.2f}x"
                  + (f"  (exit {x['rc']})" if x["rc"] else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
