"""Many workers on one study: throughput, storage cost per trial, and how soon a dead worker's
trial is retried, on SQLite and on real PostgreSQL 15 and MariaDB servers (started from the
machine's binaries; each skipped, with the reason, where it cannot be).

    python bench/workers.py --data-dir ../shared/data/fashion-mnist --trials 24 --workers 1 2 4

1. A short search (small models, one epoch of a 4,000-image subset, no pruning) with --workers N:
   trials trained per hour of wall time, and the share of the workers' time not spent training
   or evaluating (loading, sampling, storage, process start-up).
2. Storage alone: N processes each doing a trial's storage traffic in a loop (ask, the spec, 20
   user attributes, the claim, tell), no training: milliseconds of storage per trial.
3. A worker killed (SIGKILL) mid-trial under --workers 2, trials of --kill-epochs epochs (the
   other worker mid-trial too): seconds from its death until its configuration is queued again.
Every configuration is printed; the machine's cores are shared by the workers (2 here).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402

from search.testing import mariadb, postgres  # noqa: E402
from search.testing.victim import trial_in_training  # noqa: E402
from search.study import record  # noqa: E402

STORAGE_LOOP = """
import sys, time, optuna
from optuna.distributions import FloatDistribution
from search.study import claims, record
from search.study.optuna_api import engine as rdb_engine
from search.study.storage import open_storage
from search.study.opening import open_study
from search.loop.options import make_sampler
url, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
study = open_study(open_storage(url), "s", ("acc", "params"), make_sampler("random", k))
engine = rdb_engine(study)
start = time.perf_counter()
for i in range(n):
    t = study.ask({"x": FloatDistribution(0, 1)})
    record.set_spec(t, '{"arch":{"convs":[{"filters":%d}]}}' % (1000 * k + i + 1))
    claims.claim(engine, study._study_id, '{"k":%d,"i":%d}' % (k, i), t.number, lambda n: False)
    for j in range(20):
        t.set_user_attr(f"a{j}", 0.5)
    study.tell(t, [0.9, 100.0])
print((time.perf_counter() - start) / n)
"""


MAX_FLOPS = 2_000_000  # small models only


def search_cmd(args, url: str, workers: int, trials: int, folder: Path, epochs: int = 1) -> list[str]:
    return [sys.executable, "-m", "search.cli", "--data-dir", args.data_dir, "--storage", url, "--study", "w",
            "--trials", str(trials), "--epochs", str(epochs), "--train-subset", "4000", "--val-size", "2000",
            "--max-flops", str(MAX_FLOPS), "--pruner", "none", "--no-enqueue-seeds", "--no-warm-start", "--quiet",
            "--workers", str(workers), "--artifact-dir", str(folder / "weights")]


def throughput(args, url: str, workers: int, folder: Path) -> str:
    start = time.perf_counter()
    proc = subprocess.run(search_cmd(args, url, workers, args.trials, folder), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return f"failed: {proc.stderr.strip().splitlines()[-1]}"
    trials = optuna.load_study(study_name="w", storage=url).trials
    trained = [t for t in trials if record.was_trained(t)]
    busy = sum(t.user_attrs.get(record.TRAIN_SECONDS, 0) + t.user_attrs.get(record.EVAL_SECONDS, 0) for t in trained)
    return (f"{len(trained)} trials in {wall:.0f} s: {3600 * len(trained) / wall:,.0f} trials/h; "
            f"{max(0.0, 1 - busy / (workers * wall)):.0%} of the workers' time not training")


def storage_cost(url: str, workers: int, per_worker: int = 60) -> str:
    procs = [subprocess.Popen([sys.executable, "-c", STORAGE_LOOP, url, str(per_worker), str(k)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(workers)]
    times = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            return f"failed: {err.strip().splitlines()[-1]}"
        times.append(float(out))
    return f"{1000 * sum(times) / len(times):.1f} ms of storage per trial (mean of {workers} worker(s))"


def death_to_retry(args, url: str, folder: Path) -> str:
    # Long trials (--kill-epochs), so that the other worker is mid-trial too when one dies.
    proc = subprocess.Popen(search_cmd(args, url, 2, 10_000, folder, args.kill_epochs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    storage = optuna.storages.RDBStorage(url)
    try:
        victim = trial_in_training(url, proc, MAX_FLOPS, not_pid=proc.pid, every=0.05, within=300)
        if victim is None:
            return "no trial of the second worker seen"
        os.kill(victim[0], signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 600:
            if any(t.system_attrs.get("failed_trial") == victim[1] for t in storage.get_all_trials(victim[2])):
                return f"{time.monotonic() - killed:.1f} s from SIGKILL to its configuration queued again"
            time.sleep(0.05)
        return "not retried within 10 minutes"
    finally:
        proc.kill()
        proc.wait()
        storage.engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--kill-epochs", type=int, default=8, help="epochs of the trials in the kill test")
    ap.add_argument("--only-kill", action="store_true", help="the kill test alone")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        root = Path(tmp)
        backends = [("sqlite", lambda name: f"sqlite:///{root / name}.db")]
        for module in (postgres, mariadb):
            why = module.why_not()
            if why is None:
                server = servers.enter_context(module.server())
                backends.append((module.__name__, server.create))
            else:
                print(f"{module.__name__}: skipped ({why})")
        for name, new_db in backends:
            for n in [] if args.only_kill else args.workers:
                folder = root / f"{name}-{n}"
                folder.mkdir()
                print(f"{name}, {n} worker(s), search: {throughput(args, new_db(f'search{n}'), n, folder)}", flush=True)
                print(f"{name}, {n} worker(s), storage: {storage_cost(new_db(f'storage{n}'), n)}", flush=True)
            folder = root / f"{name}-kill"
            folder.mkdir()
            print(f"{name}, worker killed: {death_to_retry(args, new_db('kill'), folder)}", flush=True)

if __name__ == "__main__":
    main()
