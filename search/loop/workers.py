"""The other worker processes of ``--workers N``: started with the same command, watched while they
train, and waited for; a worker learns its role from ``--worker-of`` (the first worker's pid).

Workers share the study through its storage, each with its own ``--worker-id`` (its own stream
of candidates) and its share of the CPU threads (one GPU each where there are several).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Callable

import torch

from fmnist.errors import UsageError
from fmnist.trainer import available_memory

from search import signals

# One worker's resident memory on a CPU: the interpreter with torch loaded, the data set, one
# model's training (measured: about 0.9 GiB with a mid-sized net; rounded up).
WORKER_BYTES = 3 * 2**30 // 2


def processes_in_memory() -> int | None:
    """How many processes of WORKER_BYTES the memory free now holds (at least 1; None where it
    cannot be told)."""
    free = available_memory(torch.device("cpu"))
    return None if free is None else max(1, int(free // WORKER_BYTES))


def check_memory(processes: int, each: str) -> None:
    """Refuse ``processes`` that the memory free now does not hold; ``each`` names one of them."""
    free = available_memory(torch.device("cpu"))
    if free is not None and processes * WORKER_BYTES > free:
        raise UsageError(f"{each} needs about {WORKER_BYTES / 2**30:.1f} GiB here, and {free / 2**30:.1f} GiB "
                         f"are free; at most {max(1, int(free // WORKER_BYTES))} fit")


def start_workers(args: argparse.Namespace) -> list[subprocess.Popen]:
    """Workers 1..N-1 of --workers N: the same command, each with its own --worker-id, quiet, and
    its share of the CPU threads (this process is worker 0)."""
    threads = max(1, (args.threads or torch.get_num_threads()) // args.workers)
    torch.set_num_threads(threads)
    base = list(args.argv)
    gpus = torch.cuda.device_count() if args.device.startswith("cuda:") else 0
    for flag in ("--workers", "--worker-id", "--threads") + (("--device",) if gpus else ()):
        while flag in base:
            i = base.index(flag)
            del base[i:i + 2]
        base = [a for a in base if not a.startswith(flag + "=")]
    print(f"starting {args.workers - 1} more worker(s) on the study, {threads} thread(s) each")
    return [subprocess.Popen([sys.executable, "-m", "search.cli", *base, "--quiet", "--worker-id",
                              str(args.worker_id + k), "--threads", str(threads), "--worker-of", str(os.getpid()),
                              *(["--device", f"cuda:{(args.worker_id + k) % gpus}"] if gpus else [])])
            for k in range(1, args.workers)]


def watch(workers: list[subprocess.Popen], reclaim_dead: Callable[[], list[int]], every: float = 1.0) -> None:
    """A background check of the workers this one started: when one dies (kill -9, out of memory),
    its trial is failed and queued again within a second, not when a worker next finishes a trial."""
    def loop() -> None:
        handled: set[int] = set()
        while True:
            finished = [w for w in workers if w.poll() is not None]
            killed = {w.pid for w in finished if w.returncode < 0} - handled
            if killed:
                try:
                    reclaim_dead()
                except Exception:  # the storage away a moment: the next trial end reclaims it
                    pass
                handled |= killed
            if len(finished) == len(workers):
                return
            time.sleep(every)

    threading.Thread(target=loop, name="fmnist-worker-watch", daemon=True).start()


def wait_for(workers: list[subprocess.Popen], interrupt: KeyboardInterrupt | None = None) -> list[int]:
    """Wait for the other workers; the exit codes of those that failed (one killed by a signal is
    said, not counted: its trial was queued again and the study goes on without it). A SIGTERM
    reached this worker alone (Ctrl-C in a terminal reaches them all): it is passed on to them."""
    if isinstance(interrupt, signals.Terminated):
        for w in workers:
            if w.poll() is None:
                w.terminate()
    codes = []
    for w in workers:
        while True:
            try:
                code = w.wait()
                break
            except KeyboardInterrupt:  # a second signal: let them finish their own way
                continue
        if code < 0:
            print(f"worker {w.pid} was killed (signal {-code}); its trial was queued again")
        elif code not in (0, 130, 143):
            codes.append(code)
    return codes


def check_workers(args: argparse.Namespace) -> None:
    """--threads above the cores is only slower (a warning); --workers whose processes would not
    fit in the memory free now are refused."""
    cores = os.cpu_count() or 1
    if args.threads and args.threads > cores:
        print(f"warning: --threads {args.threads} is more than this machine's {cores} cores; training "
              f"will be slower, not faster", file=sys.stderr)
    if args.workers > 1:
        check_memory(args.workers, f"--workers {args.workers}: each worker process")
        if args.workers > cores and not torch.cuda.is_available():
            print(f"warning: --workers {args.workers} on {cores} cores: workers share the cores, so "
                  f"each trial is slower", file=sys.stderr)
