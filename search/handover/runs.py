"""The final training's runs side by side on a CPU, each in a process of its own (``--parallel``).

PyTorch spreads one small network's training thinly over many threads: on 2 cores, two runs on one
thread each train 1.2x (a 170k net) to 2x (a 6k net) the images of one run on both threads. Each
process is started fresh (spawn: no copy of this process's threads or open database), gets the
data as arrays, trains one run and sends back its test accuracy, and the weights of the run that
is exported; progress comes back as it trains. A process that dies (out of memory, kill -9)
stops the final training with one line naming the run; an interrupt here ends them all. A run
whose parent is gone stops at its next report, rather than train on for nobody.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import queue
import signal
import traceback
from typing import Callable, Sequence

import numpy as np
import torch

import fmnist
from fmnist.errors import UsageError
from space import ModelSpec, build

from search.loop.workers import WORKER_BYTES

POLL_S = 0.5  # how soon a process that died is noticed


def share(device: torch.device, asked: int | None, runs: int) -> tuple[int, int | None]:
    """How many runs train side by side (``asked``, or as many as there are threads, runs and
    memory for), and the threads of each (None: one run at a time on this process's threads)."""
    if device.type != "cpu":
        if asked and asked > 1:
            raise UsageError("side by side runs are for a CPU's cores; on a GPU the runs train one at a time",
                             "parallel")
        return 1, None
    threads = torch.get_num_threads()
    free = fmnist.available_memory(device)
    fit = max(1, int(free // WORKER_BYTES)) if free is not None else threads
    if asked and free is not None and asked > fit:
        raise UsageError(f"{asked} runs side by side need about {WORKER_BYTES / 2**30:.1f} GiB each, and "
                         f"{free / 2**30:.1f} GiB are free here; at most {fit} fit", "parallel")
    n = min(asked or min(threads, fit), runs)
    return (n, max(1, threads // n)) if n > 1 else (1, None)


def one_run(spec: ModelSpec, data: fmnist.Splits, test: fmnist.Split, seed: int, precision: str,
            on_report: Callable[[fmnist.Report], None]) -> tuple[torch.nn.Module, float]:
    """``spec`` built and trained with ``seed`` on ``data``; the model and its test accuracy."""
    model = build(spec.arch, seed=seed)
    fmnist.train(model, data, spec.train, seed=seed, precision=precision, evaluate_test=False, on_report=on_report)
    amp = fmnist.pick_precision(data.train.images.device, precision)
    return model, fmnist.accuracy(fmnist.predict(model, test.images, amp), test.labels)




def _child(run: tuple[int, int], spec_text: str, arrays: dict[str, np.ndarray], precision: str, threads: int,
           send_weights: bool, parent: int, out: multiprocessing.Queue) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent ends the runs
    torch.set_num_threads(threads)
    try:
        def split(part: str) -> fmnist.Split:
            return fmnist.Split(torch.from_numpy(arrays[f"{part}_images"]), torch.from_numpy(arrays[f"{part}_labels"]))
        train, test = split("train"), split("test")
        data = fmnist.Splits(train, fmnist.Split(train.images[:0], train.labels[:0]), test)

        def report(r: fmnist.Report) -> None:
            if os.getppid() != parent:
                os._exit(1)
            out.put(("progress", run, r))
        model, acc = one_run(ModelSpec.from_json(spec_text), data, test, run[1], precision, report)
        weights = None
        if send_weights:
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            weights = buf.getvalue()
        out.put(("done", run, (acc, weights)))
    except Exception:
        out.put(("failed", run, traceback.format_exc()))


def _ended(process: multiprocessing.Process) -> str:
    code = process.exitcode
    return f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"


def in_processes(runs: Sequence[tuple[int, int]], specs: dict[int, ModelSpec], data: fmnist.Splits,
                 test: fmnist.Split, precision: str, processes: int, threads: int, exported_seed: int,
                 report: Callable[[tuple[int, int], fmnist.Report], None]
                 ) -> dict[tuple[int, int], tuple[torch.nn.Module | None, float]]:
    """Each run (trial, seed) of ``runs``, started in that order, ``processes`` at a time on
    ``threads`` threads each: its model (the ``exported_seed``'s run only, else None) and test
    accuracy. ``report`` hears each run's progress, in this process."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    arrays = {"train_images": data.train.images.cpu().numpy(), "train_labels": data.train.labels.cpu().numpy(),
              "test_images": test.images.cpu().numpy(), "test_labels": test.labels.cpu().numpy()}
    waiting, active = list(runs), {}
    results: dict[tuple[int, int], tuple[torch.nn.Module | None, float]] = {}
    try:
        while waiting or active:
            while waiting and len(active) < processes:
                run = waiting.pop(0)
                active[run] = ctx.Process(target=_child, daemon=True, args=(
                    run, specs[run[0]].to_json(), arrays, precision, threads, run[1] == exported_seed,
                    os.getpid(), out))
                active[run].start()
            for run, process in active.items():  # each time: the other runs' reports never stop coming
                if process.exitcode not in (None, 0):
                    raise UsageError(f"the final training's run of trial {run[0]} (seed {run[1]}) "
                                     f"{_ended(process)} (out of memory?); nothing was written; "
                                     f"--parallel 1 trains one run at a time")
            try:
                kind, run, value = out.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "progress":
                report(run, value)
            elif kind == "failed":
                raise RuntimeError(f"the final training's run of trial {run[0]} (seed {run[1]}) failed:\n{value}")
            else:
                acc, weights = value
                model = None
                if weights is not None:
                    model = build(specs[run[0]].arch)
                    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
                results[run] = (model, acc)
                active.pop(run).join()
    finally:
        for process in active.values():
            process.terminate()
        for process in active.values():
            process.join()
        out.close()
    return results
