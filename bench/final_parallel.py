"""The final training's runs side by side (``export-best --retrain --parallel P``) against one run at
a time on all threads (``--parallel 1``): the same runs (warm-start designs x seeds x epochs on all
60k training images), both ways in one process, one after the other, through the function
export-best calls (``search.handover.final.train_all``).

Prints the wall time of each way, their ratio, and each run's test accuracy both ways (the same
seeds, trained on different thread counts: equal in distribution, not bit for bit).

    python bench/final_parallel.py --data-dir ../shared/data/fashion-mnist --warm 2 4 6 --seeds 2 --epochs 1
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import fmnist  # noqa: E402
from search.handover import final, runs  # noqa: E402
from search.loop.plan import measure_rate  # noqa: E402
from space import param_count  # noqa: E402
from space.sample import WARM_STARTS, fixed  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--warm", type=int, nargs="+", default=[2, 4, 6], help="warm starts (space.sample.WARM_STARTS)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--parallel", type=int, help="runs side by side (default: as export-best chooses)")
    args = p.parse_args()
    ds = fmnist.load(args.data_dir, download=False)
    data = fmnist.make_splits(ds, val_size=0, seed=0)
    specs = {k: fixed(WARM_STARTS[k]) for k in args.warm}
    names = {k: f"warm {k} ({param_count(s.arch):,} params)" for k, s in specs.items()}
    cpu = torch.device("cpu")
    processes, threads = runs.share(cpu, args.parallel, len(specs) * args.seeds)
    all_threads = torch.get_num_threads()
    print(f"{len(specs)} model(s) x {args.seeds} seed(s) x {args.epochs} epoch(s) on {len(data.train):,} images; "
          f"one at a time on {all_threads} thread(s), then {processes} side by side on {threads} thread(s) each")
    walls, accs = {}, {}
    for way in ("one at a time", "side by side"):
        start = time.perf_counter()
        with runs.Workers(processes, threads, data, ds.test, "auto") if way == "side by side" \
                else contextlib.nullcontext() as workers:
            # the speeds plan the ETA, as export-best measures them (in the workers side by side)
            rates = workers.measure(specs) if workers else {k: measure_rate(s, data, "auto") for k, s in specs.items()}
            plan = final.Plan({k: args.epochs for k in specs}, tuple(range(args.seeds)), rates, len(data.train),
                              processes=workers.processes if workers else 1)
            measured = time.perf_counter() - start
            trained = final.train_all(plan, specs, names, data, ds.test, "auto", final.Clock(plan), lambda _: None,
                                      workers)
        walls[way] = time.perf_counter() - start
        accs[way] = {k: t.accs for k, t in trained.items()}
        print(f"{way}: {walls[way]:.0f} s, of which {measured:.0f} s measuring the speeds and starting; the runs "
              f"{walls[way] - measured:.0f} s (planned {plan.seconds():.0f} s)", flush=True)
    print(f"side by side / one at a time: {walls['one at a time'] / walls['side by side']:.2f}x the runs an hour")
    for k in specs:
        both = "; ".join(f"{way} " + " ".join(f"{100 * a:.2f}" for a in accs[way][k]) for way in accs)
        print(f"  {names[k]}: test % by seed: {both} (mean {100 * statistics.fmean(accs['one at a time'][k]):.2f} "
              f"vs {100 * statistics.fmean(accs['side by side'][k]):.2f})")


if __name__ == "__main__":
    main()
