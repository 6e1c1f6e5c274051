"""The final training's runs side by side on a CPU, each process on its share of the threads (``--parallel``).

PyTorch spreads one small network's training thinly over many threads: on 2 cores, two runs on one
thread each train 1.2x (a 170k net) to 2x (a 6k net) the images of one run on both threads. The
processes are started fresh (spawn: no copy of this process's threads or open database), get the
data once, as arrays, then take tasks in turn: first each model's speed, measured side by side as
the runs will train (what the minutes are planned with), then the runs, each sending back its
test accuracy (and the weights of the run that is exported) and its progress as it trains. A
process that dies (out of memory, kill -9) stops the final training with one line naming its run;
an interrupt here ends them all; a process whose parent is gone stops within a second.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import queue
import signal
import time
import traceback
from typing import Callable, Sequence

import numpy as np
import torch

import fmnist
from fmnist.errors import UsageError
from space import ModelSpec, build, flops

from search.loop.plan import measure_rate
from search.loop.workers import check_memory, processes_in_memory

POLL_S = 0.5  # how soon a process that died is noticed
SEEN_EVERY_S = 1.0  # how often a run says how far it is, between its epochs


def share(device: torch.device, asked: int | None, runs: int) -> tuple[int, int | None]:
    """How many runs train side by side (``asked``, or as many as there are threads, runs and
    memory for), and the threads of each (None: one run at a time on this process's threads)."""
    if device.type != "cpu":
        if asked and asked > 1:
            raise UsageError("side by side runs are for a CPU's cores; on a GPU the runs train one at a time",
                             "parallel")
        return 1, None
    threads = torch.get_num_threads()
    if asked:
        check_memory(asked, f"--parallel {asked}: each run's process")
    n = min(asked or min(threads, processes_in_memory() or threads), runs)
    return (n, max(1, threads // n)) if n > 1 else (1, None)


def one_run(spec: ModelSpec, data: fmnist.Splits, test: fmnist.Split, seed: int, precision: str,
            on_report: Callable[[fmnist.Report], None],
            on_progress: Callable[[int, int], None] | None = None) -> tuple[torch.nn.Module, float]:
    """``spec`` built and trained with ``seed`` on ``data``; the model and its test accuracy."""
    model = build(spec.arch, seed=seed)
    fmnist.train(model, data, spec.train, seed=seed, precision=precision, evaluate_test=False, on_report=on_report,
                  on_progress=on_progress)
    amp = fmnist.pick_precision(data.train.images.device, precision)
    return model, fmnist.accuracy(fmnist.predict(model, test.images, amp), test.labels)


def _worker(arrays: dict[str, np.ndarray], threads: int, precision: str, parent: int,
            tasks: multiprocessing.Queue, out: multiprocessing.Queue) -> None:
    """One process of ``Workers``: takes (key, kind, spec, seed, send_weights) tasks until it is
    terminated (``Workers.__exit__``) or its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent ends the runs
    torch.set_num_threads(threads)

    def split(part: str) -> fmnist.Split:
        return fmnist.Split(torch.from_numpy(arrays[f"{part}_images"]), torch.from_numpy(arrays[f"{part}_labels"]))
    train, test = split("train"), split("test")
    data = fmnist.Splits(train, fmnist.Split(train.images[:0], train.labels[:0]), test)

    def orphaned() -> None:
        if os.getppid() != parent:
            os._exit(1)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            orphaned()
            continue
        key, kind, spec_text, seed, send_weights = task
        out.put(("started", key, os.getpid()))
        try:
            spec = ModelSpec.from_json(spec_text)
            if kind == "measure":
                out.put(("done", key, measure_rate(spec, data, precision)))
                continue
            last = [0.0]

            def seen(images: int, _total: int) -> None:  # the ETA follows every second, not every epoch
                orphaned()
                if time.monotonic() - last[0] >= SEEN_EVERY_S:
                    last[0] = time.monotonic()
                    out.put(("seen", key, images))

            def report(r: fmnist.Report) -> None:
                orphaned()
                out.put(("report", key, r))
            model, acc = one_run(spec, data, test, seed, precision, report, seen)
            weights = None
            if send_weights:
                buf = io.BytesIO()
                torch.save(model.state_dict(), buf)
                weights = buf.getvalue()
            out.put(("done", key, (acc, weights)))
        except Exception:
            out.put(("failed", key, traceback.format_exc()))


def _ended(process: multiprocessing.Process) -> str:
    code = process.exitcode
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


class Workers:
    """``processes`` processes on ``threads`` threads each, holding the training and test images
    once, that measure the models' speed and train the runs. A task goes to whichever process is
    free first, in the order given (what ``search.handover.final.makespan`` plans)."""

    def __init__(self, processes: int, threads: int, data: fmnist.Splits, test: fmnist.Split, precision: str):
        self.processes, self.threads, self.precision = processes, threads, precision
        self.arrays = {"train_images": data.train.images.cpu().numpy(), "train_labels": data.train.labels.cpu().numpy(),
                       "test_images": test.images.cpu().numpy(), "test_labels": test.labels.cpu().numpy()}
        self.doing: dict[int, tuple] = {}  # pid -> the task it took last

    def __enter__(self) -> "Workers":
        ctx = multiprocessing.get_context("spawn")
        self.tasks, self.out = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker, daemon=True, args=(
            self.arrays, self.threads, self.precision, os.getpid(), self.tasks, self.out)) for _ in range(self.processes)]
        for process in self.procs:
            process.start()
        return self

    def __exit__(self, *_exc) -> None:
        for process in self.procs:
            process.terminate()
        for process in self.procs:
            process.join()
        self.tasks.close()
        self.out.close()

    def measure(self, specs: dict[int, ModelSpec]) -> dict[int, float]:
        """Each model's training images/s in one of the processes, all measuring side by side as
        they will train (the slowest first)."""
        order = sorted(specs, key=lambda n: -flops(specs[n].arch))
        done = self._run([((n, None), "measure", specs[n].to_json(), 0, False) for n in order], lambda *_: None)
        return {n: rate for (n, _), rate in done.items()}

    def train(self, runs: Sequence[tuple[int, int]], specs: dict[int, ModelSpec], exported_seed: int,
              on_seen: Callable[[tuple[int, int], int], None],
              on_report: Callable[[tuple[int, int], fmnist.Report], None]
              ) -> dict[tuple[int, int], tuple[torch.nn.Module | None, float]]:
        """Each run (trial, seed), started in that order: its model (the ``exported_seed``'s run
        only, else None) and test accuracy; ``on_seen`` hears its images trained about every
        second, ``on_report`` its epochs."""
        def heard(kind: str, run: tuple[int, int], value) -> None:
            (on_seen if kind == "seen" else on_report)(run, value)
        done = self._run([(run, "train", specs[run[0]].to_json(), run[1], run[1] == exported_seed) for run in runs],
                         heard)
        results = {}
        for run, (acc, weights) in done.items():
            model = None
            if weights is not None:
                model = build(specs[run[0]].arch)
                model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
            results[run] = (model, acc)
        return results

    def _run(self, tasks: list[tuple], heard: Callable[[str, tuple, object], None]) -> dict[tuple, object]:
        for task in tasks:
            self.tasks.put(task)
        done: dict[tuple, object] = {}
        while len(done) < len(tasks):
            self._check()  # each time: the other runs' reports never stop coming
            try:
                kind, key, value = self.out.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "started":
                self.doing[value] = key
            elif kind == "failed":
                raise RuntimeError(f"the final training's {_task(key)} failed:\n{value}")
            elif kind == "done":
                done[key] = value
            else:
                heard(kind, key, value)
        return done

    def _check(self) -> None:
        for process in self.procs:
            if process.exitcode is not None:  # a worker never ends on its own while the pool is open
                key = self.doing.get(process.pid)
                raise UsageError(f"the final training's {_task(key) if key else 'process'} {_ended(process)} "
                                 f"(out of memory?); nothing was written; --parallel 1 trains one run at a time")


def _task(key: tuple) -> str:
    n, seed = key
    return f"speed measurement of trial {n}" if seed is None else f"run of trial {n} (seed {seed})"
