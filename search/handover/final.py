"""The final training: each chosen architecture trained again from scratch, longer, on all 60k
training images, as NAS methods do once the search has ranked architectures on its budget.

The validation split has done its job by then (selection), so it is trained on too; test accuracy
is only reported. ``--seeds K`` trains K runs of each architecture (seeds ``--seed``,
``--seed``+1, ...) and reports their mean and spread; the exported model is the first seed's
run, chosen before training, never by its test accuracy. ``--retrain-minutes M`` sizes the epochs
so that all runs together take about M minutes here, from each model's measured training speed;
``--epochs`` gives one number by hand; neither keeps each model's search epochs.

On a CPU with several cores the runs train side by side, each in its own process with its share
of the threads (``--parallel``, ``search.handover.runs``): one thread a process trains small and
mid-sized nets faster in total than one process on every thread (measured on 2 cores: 1.2x to 2x).
The minutes are then the wall time of the runs spread over the processes, longest first.

How M minutes are split (``split``). "equal": one number of epochs for all. "hypervolume" (the
default): the split that most raises the final front's hypervolume, the figure the tool judges a
front by (``search.view.hypervolume``: error against log10 parameters, up to the study's reference
point). A model's accuracy there counts in proportion to its width on the front: the decades of
parameters from its count to the next larger chosen model's (the reference point's for the
largest). Assuming every model's accuracy rises with its epochs alike, as a - b/epochs, an epoch
is given where it adds the most width x accuracy per second of training: the largest model, whose
width runs to the reference point, and the cheap small ones get more than an equal share, the
middle of the front, narrow and costly, less.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from optuna.trial import FrozenTrial

import fmnist
from space import ModelSpec, param_count

from search.handover import runs
from search.loop.plan import measure_rate
from search.study import record

MAX_EPOCHS = 300  # --retrain-minutes on a fast machine: more buys little on this data
PACE_WINDOW_S = 300.0  # the ETA's pace: spans a few epochs, and forgets a load that has passed
# What the "hypervolume" split does, said by the plan line and by the report.
HYPERVOLUME_SPLIT = ("split where an epoch raises the front's hypervolume most for its training time: the largest "
                     "and the cheapest models get more than an equal share; --retrain-split equal gives all one "
                     "number")


def makespan(lengths: Sequence[float], processes: int) -> float:
    """Seconds until ``lengths`` (runs, in the order they start) are done on ``processes`` side by
    side, each run started as soon as a process is free."""
    free = [0.0] * max(1, processes)
    for length in lengths:
        heapq.heapreplace(free, free[0] + length)
    return max(free)


@dataclass(frozen=True)
class Plan:
    epochs: dict[int, int]        # trial number -> epochs of its final training
    seeds: tuple[int, ...]
    rates: dict[int, float]       # trial number -> training images/s of one run here (in one of the processes)
    train_images: int
    split: str | None = None      # "hypervolume" or "equal"; None: epochs not sized to --retrain-minutes
    processes: int = 1            # runs trained side by side

    def run_seconds(self, n: int) -> float:
        return self.train_images * self.epochs[n] / self.rates[n]

    def runs(self) -> list[tuple[int, int]]:
        """(trial, seed) of every run in the order they start: model by model on one process, the
        longest first on several (so that a long run is not left to start last)."""
        runs = [(n, s) for n in self.epochs for s in self.seeds]
        return runs if self.processes == 1 else sorted(runs, key=lambda r: -self.run_seconds(r[0]))

    def seconds(self) -> float:
        return makespan([self.run_seconds(n) for n, _ in self.runs()], self.processes)

    def images(self) -> int:
        return sum(self.train_images * e * len(self.seeds) for e in self.epochs.values())


def rate_here(t: FrozenTrial, spec: ModelSpec, data: fmnist.Splits, device: torch.device, precision: str) -> float:
    """The trial's training speed on this device: as its search measured it, when it trained
    here with the same precision, else measured briefly now."""
    a = t.user_attrs
    if a.get(record.DEVICE) == str(device) and a.get(record.IMAGES_PER_S) and (
            precision == "auto" or a.get(record.PRECISION) == precision):
        return float(a[record.IMAGES_PER_S])
    return measure_rate(spec, data, precision)


def plan(chosen: Sequence[FrozenTrial], specs: dict[int, ModelSpec], data: fmnist.Splits, device: torch.device,
         precision: str, seed: int, seeds: int = 1, minutes: float | None = None,
         epochs: int | None = None, split: str = "hypervolume", reference_params: int | None = None,
         workers: runs.Workers | None = None) -> Plan:
    """With ``workers``, the runs train side by side there, at the speed they measure there."""
    rates = workers.measure(specs) if workers else {
        t.number: rate_here(t, specs[t.number], data, device, precision) for t in chosen}
    processes = workers.processes if workers else 1
    n = len(data.train)
    if epochs is not None:
        each = {t.number: epochs for t in chosen}
    elif minutes is not None:
        cost = {t.number: n / rates[t.number] for t in chosen}  # seconds an epoch of one run
        if split == "equal":
            each = split_equally(cost, minutes * 60, seeds, processes)
        else:
            params = {t.number: param_count(specs[t.number].arch) for t in chosen}
            each = split_by_hypervolume(cost, front_widths(params, reference_params), minutes * 60, seeds, processes)
    else:
        each = {t.number: specs[t.number].train.epochs for t in chosen}
    return Plan(each, tuple(seed + k for k in range(seeds)), rates, n,
                split if minutes is not None and epochs is None else None, processes)


def front_widths(params: dict[int, int], reference_params: int | None) -> dict[int, float]:
    """Each model's width on the front's hypervolume, in decades of parameters: from its count to
    the next larger count among the models (models of one count share it), and for the largest to
    the reference point's count, or to twice its own where it is past that point."""
    counts = sorted(set(params.values()))
    ends = counts[1:] + [max(reference_params or 0, 2 * counts[-1])]
    width = {c: math.log10(end / c) for c, end in zip(counts, ends)}
    return {k: width[c] for k, c in params.items()}


def fits(epochs: dict[int, int], cost: dict[int, float], seconds: float, seeds: int, processes: int) -> bool:
    """Whether ``seeds`` runs of each model, ``cost`` seconds an epoch, end within ``seconds`` on
    ``processes`` side by side (longest first, as they are trained)."""
    lengths = sorted((cost[k] * e for k, e in epochs.items() for _ in range(seeds)), reverse=True)
    return makespan(lengths, processes) <= seconds


def split_equally(cost: dict[int, float], seconds: float, seeds: int = 1, processes: int = 1) -> dict[int, int]:
    """One number of epochs for all (at least 1, at most MAX_EPOCHS): the most that fits."""
    e = 1
    while e < MAX_EPOCHS and fits(dict.fromkeys(cost, e + 1), cost, seconds, seeds, processes):
        e += 1
    return dict.fromkeys(cost, e)


def split_by_hypervolume(cost: dict[int, float], width: dict[int, float], seconds: float, seeds: int = 1,
                         processes: int = 1) -> dict[int, int]:
    """Epochs for each model (at least 1, at most MAX_EPOCHS) within ``seconds``: one at a time where
    width x (1/e - 1/(e+1)), the hypervolume an epoch adds under the a - b/e curve, is largest for
    its ``cost`` (seconds an epoch of one run), while the runs still fit (``fits``). Runs side by
    side pack unevenly (three seeds on two processes), so that greedy split is then improved by
    moves that give one model an epoch more, taken from the others where they lose least."""
    def fill(epochs: dict[int, int]) -> dict[int, int]:
        epochs = dict(epochs)

        def gain(k: int) -> float:
            e = epochs[k]
            return width[k] / (e * (e + 1)) / cost[k]
        heap = [(-gain(k), k) for k in cost]
        heapq.heapify(heap)
        while heap:
            _, k = heapq.heappop(heap)
            if epochs[k] >= MAX_EPOCHS or not fits({**epochs, k: epochs[k] + 1}, cost, seconds, seeds, processes):
                continue
            epochs[k] += 1
            heapq.heappush(heap, (-gain(k), k))
        return epochs

    def value(epochs: dict[int, int]) -> float:
        return -sum(width[k] / e for k, e in epochs.items())

    def better(epochs: dict[int, int]) -> dict[int, int] | None:
        for k in cost:
            if epochs[k] >= MAX_EPOCHS:
                continue
            moved = {**epochs, k: epochs[k] + 1}
            while not fits(moved, cost, seconds, seeds, processes):
                others = [j for j in moved if j != k and moved[j] > 1]
                if not others:
                    break
                j = min(others, key=lambda j: width[j] / (moved[j] * (moved[j] - 1)))
                moved[j] -= 1
            else:
                moved = fill(moved)
                if value(moved) > value(epochs) * (1 - 1e-12):
                    return moved
        return None

    epochs = fill(dict.fromkeys(cost, 1))
    if processes > 1:
        while (moved := better(epochs)) is not None:
            epochs = moved
    return epochs


def describe(p: Plan, search_epochs: dict[int, int], minutes: float | None) -> list[str]:
    """What the final training will do, said before it starts."""
    epochs = sorted(set(p.epochs.values()))
    runs = len(p.epochs) * len(p.seeds)
    lines = [f"final training: {len(p.epochs)} model(s) x {len(p.seeds)} seed(s) = {runs} run(s) of "
             f"{'/'.join(map(str, epochs))} epoch(s) on all {p.train_images:,} training images"
             + (f", {p.processes} side by side" if p.processes > 1 else "")
             + f"; about {p.seconds() / 60:.0f} min here (from each model's measured speed)"
             + (f", sized to --retrain-minutes {minutes:g}" if minutes is not None else "")]
    if len(epochs) > 1:
        lines.append("epochs by trial: " + ", ".join(f"{n}: {e}" for n, e in p.epochs.items())
                     + (f" ({HYPERVOLUME_SPLIT})" if p.split == "hypervolume" else ""))
    short = [n for n, e in p.epochs.items() if e < search_epochs.get(n, 0)]
    if short:
        lines.append(f"note: {len(short)} model(s) get fewer epochs than the search trained them with "
                     f"(trial {short[0]}: {p.epochs[short[0]]} against {search_epochs[short[0]]}); their final "
                     f"figure may come out lower (more minutes help)")
    return lines


@dataclass
class Clock:
    """Progress over the whole final training, for an ETA that counts every run still to come.
    Work is counted in planned seconds (each model's images at its own measured speed), so that a
    small model finished fast does not make the large ones ahead look cheap: the plan's estimate
    until something has been trained, then what is left of each run, spread over the processes as
    they will train it, at the recent pace of a process (over the last PACE_WINDOW_S at least), so
    that a load that has passed, another job on the same cores, stops inflating the ETA once it is
    gone. A process's pace is the work done over the process-seconds spent: at the end, with fewer
    runs left than processes, the idle ones do not count."""
    plan: Plan
    started: float = dataclasses.field(default_factory=time.monotonic)
    # (when, planned seconds done, process-seconds spent) at the start and at each report
    marks: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)
    progress: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)  # run -> its planned seconds done

    def __post_init__(self) -> None:
        self.marks.append((self.started, 0.0, 0.0))

    @property
    def done(self) -> float:
        """Planned seconds of the runs trained so far."""
        return sum(self.progress.values())

    def _rest(self) -> list[float]:
        """What is left of each run, in the order they start, in planned seconds."""
        return [max(0.0, self.plan.run_seconds(n) - self.progress.get((n, s), 0.0)) for n, s in self.plan.runs()]

    def _spent(self, now: float) -> float:
        """Process-seconds spent until ``now``: since the last mark, as many processes as there were runs left."""
        when, _, spent = self.marks[-1]
        return spent + (now - when) * min(self.plan.processes, sum(r > 0 for r in self._rest()))

    def advance(self, run: tuple[int, int], done: float) -> None:
        """``run`` (trial, seed) has trained ``done`` planned seconds of its own."""
        now = time.monotonic()
        spent = self._spent(now)
        self.progress[run] = done
        self.marks.append((now, self.done, spent))

    def left(self) -> float:
        rest = self._rest()
        ahead = makespan([r for r in rest if r > 0], self.plan.processes)
        done = self.done
        if not done:
            return ahead
        now = time.monotonic()
        _, before, spent_before = self.marks[0]
        for when, then_done, spent in self.marks:
            if now - when >= PACE_WINDOW_S and then_done < done:
                before, spent_before = then_done, spent
        return ahead * (self._spent(now) - spent_before) / (done - before)


@dataclass(frozen=True)
class Trained:
    model: torch.nn.Module  # the first seed's run: the one exported
    spec: ModelSpec         # with the final training's epochs
    accs: list[float]       # each seed's test accuracy, in the order of the plan's seeds


def train_all(p: Plan, specs: dict[int, ModelSpec], names: dict[int, str], data: fmnist.Splits, test: fmnist.Split,
              precision: str, clock: Clock, log: Callable[[str], None],
              workers: runs.Workers | None = None) -> dict[int, Trained]:
    """Every run of the plan, in this process or side by side in ``workers``, with progress and
    the ETA logged; each trial's models and figures."""
    specs = {n: dataclasses.replace(specs[n], train=dataclasses.replace(specs[n].train, epochs=e))
             for n, e in p.epochs.items()}

    def seen(run: tuple[int, int], images: int) -> None:
        clock.advance(run, images / p.rates[run[0]])

    def report(run: tuple[int, int], r: fmnist.Report) -> None:
        n, s = run
        seen(run, r.images_seen)
        log(f"  {names[n]} seed {s} ({p.seeds.index(s) + 1}/{len(p.seeds)}): epoch {r.epoch:g} of {p.epochs[n]}, "
            f"train loss {r.train_loss:.4f}; about {clock.left() / 60:.0f} min of the final training left")

    models: dict[int, torch.nn.Module] = {}
    accs: dict[tuple[int, int], float] = {}
    if workers:
        for (n, s), (model, acc) in workers.train(p.runs(), specs, p.seeds[0], seen, report).items():
            accs[n, s] = acc
            if model is not None:
                models[n] = model
    else:
        for n, s in p.runs():
            model, accs[n, s] = runs.one_run(specs[n], data, test, s, precision, lambda r, run=(n, s): report(run, r))
            clock.advance((n, s), p.run_seconds(n))
            models.setdefault(n, model)
    return {n: Trained(models[n], specs[n], [accs[n, s] for s in p.seeds]) for n in p.epochs}


def summary(accs: Sequence[float]) -> dict:
    """Mean and sample standard deviation of the runs' test accuracies (std None for one run)."""
    return {"test_acc": list(accs), "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else None}
