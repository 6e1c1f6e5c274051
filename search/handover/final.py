"""The final training: each chosen architecture trained again from scratch, longer, on all 60k
training images, as NAS methods do once the search has ranked architectures on its budget.

The validation split has done its job by then (selection), so it is trained on too; test accuracy
is only reported. ``--seeds K`` trains K runs of each architecture (seeds ``--seed``,
``--seed``+1, ...) and reports their mean and spread; the exported model is the first seed's
run, chosen before training, never by its test accuracy. ``--retrain-minutes M`` sizes the epochs
so that all runs together take about M minutes here, from each model's measured training speed;
``--epochs`` gives one number by hand; neither keeps each model's search epochs.

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
from space import ModelSpec, build, param_count

from search.loop.plan import measure_rate
from search.study import record

MAX_EPOCHS = 300  # --retrain-minutes on a fast machine: more buys little on this data
PACE_WINDOW_S = 300.0  # the ETA's pace: spans a few epochs, and forgets a load that has passed
# What the "hypervolume" split does, said by the plan line and by the report.
HYPERVOLUME_SPLIT = ("split where an epoch raises the front's hypervolume most for its training time: the largest "
                     "and the cheapest models get more than an equal share; --retrain-split equal gives all one "
                     "number")


@dataclass(frozen=True)
class Plan:
    epochs: dict[int, int]        # trial number -> epochs of its final training
    seeds: tuple[int, ...]
    rates: dict[int, float]       # trial number -> training images/s here
    train_images: int
    split: str | None = None      # "hypervolume" or "equal"; None: epochs not sized to --retrain-minutes

    def seconds(self) -> float:
        return sum(self.train_images * e * len(self.seeds) / self.rates[n] for n, e in self.epochs.items())

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
         epochs: int | None = None, split: str = "hypervolume", reference_params: int | None = None) -> Plan:
    rates = {t.number: rate_here(t, specs[t.number], data, device, precision) for t in chosen}
    n = len(data.train)
    if epochs is not None:
        each = {t.number: epochs for t in chosen}
    elif minutes is not None:
        cost = {t.number: n * seeds / rates[t.number] for t in chosen}  # seconds an epoch, all seeds
        if split == "equal":
            e = max(1, min(MAX_EPOCHS, int(minutes * 60 / sum(cost.values()))))
            each = {t.number: e for t in chosen}
        else:
            params = {t.number: param_count(specs[t.number].arch) for t in chosen}
            each = split_by_hypervolume(cost, front_widths(params, reference_params), minutes * 60)
    else:
        each = {t.number: specs[t.number].train.epochs for t in chosen}
    return Plan(each, tuple(seed + k for k in range(seeds)), rates, n,
                split if minutes is not None and epochs is None else None)


def front_widths(params: dict[int, int], reference_params: int | None) -> dict[int, float]:
    """Each model's width on the front's hypervolume, in decades of parameters: from its count to
    the next larger count among the models (models of one count share it), and for the largest to
    the reference point's count, or to twice its own where it is past that point."""
    counts = sorted(set(params.values()))
    ends = counts[1:] + [max(reference_params or 0, 2 * counts[-1])]
    width = {c: math.log10(end / c) for c, end in zip(counts, ends)}
    return {k: width[c] for k, c in params.items()}


def split_by_hypervolume(cost: dict[int, float], width: dict[int, float], seconds: float) -> dict[int, int]:
    """Epochs for each model (at least 1, at most MAX_EPOCHS) within ``seconds``: one at a time where
    width x (1/e - 1/(e+1)), the hypervolume an epoch adds under the a - b/e curve, is largest for
    its ``cost`` in seconds; a model whose next epoch no longer fits gets no more."""
    epochs = dict.fromkeys(cost, 1)
    left = seconds - sum(cost.values())

    def gain(k: int) -> float:
        e = epochs[k]
        return width[k] / (e * (e + 1)) / cost[k]
    heap = [(-gain(k), k) for k in cost]
    heapq.heapify(heap)
    while heap:
        _, k = heapq.heappop(heap)
        if cost[k] > left or epochs[k] >= MAX_EPOCHS:
            continue
        epochs[k] += 1
        left -= cost[k]
        heapq.heappush(heap, (-gain(k), k))
    return epochs


def describe(p: Plan, search_epochs: dict[int, int], minutes: float | None) -> list[str]:
    """What the final training will do, said before it starts."""
    epochs = sorted(set(p.epochs.values()))
    runs = len(p.epochs) * len(p.seeds)
    lines = [f"final training: {len(p.epochs)} model(s) x {len(p.seeds)} seed(s) = {runs} run(s) of "
             f"{'/'.join(map(str, epochs))} epoch(s) on all {p.train_images:,} training images; about "
             f"{p.seconds() / 60:.0f} min here (from each model's measured speed)"
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
    until something has been trained, then the remaining estimate scaled by the recent pace (over
    the last PACE_WINDOW_S at least), so that a load that has passed, another job on the same
    cores, stops inflating the ETA once it is gone."""
    plan: Plan
    started: float = dataclasses.field(default_factory=time.monotonic)
    marks: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (when, done) at each report

    @property
    def done(self) -> float:
        """Planned seconds of the runs trained so far."""
        return self.marks[-1][1] if self.marks else 0.0

    def advance(self, done: float) -> None:
        self.marks.append((time.monotonic(), done))

    def left(self) -> float:
        if not self.done:
            return self.plan.seconds()
        now = time.monotonic()
        since, before = self.started, 0.0
        for when, then_done in self.marks:
            if now - when >= PACE_WINDOW_S and then_done < self.done:
                since, before = when, then_done
        return (self.plan.seconds() - self.done) * (now - since) / (self.done - before)


def train_final(name: str, spec: ModelSpec, data: fmnist.Splits, test: fmnist.Split, epochs: int,
                seeds: Sequence[int], precision: str, rate: float, clock: Clock,
                log: Callable[[str], None]) -> tuple[torch.nn.Module, ModelSpec, list[float]]:
    """Every seed's run of ``spec`` for ``epochs`` on ``data``; the first seed's model (the one
    exported), the spec it was trained with, and each run's test accuracy."""
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
    amp = fmnist.pick_precision(data.train.images.device, precision)
    first, accs = None, []
    for k, s in enumerate(seeds):
        model = build(spec.arch, seed=s)
        before = clock.done

        def progress(r: fmnist.Report) -> None:
            clock.advance(before + r.images_seen / rate)
            log(f"  {name} seed {s} ({k + 1}/{len(seeds)}): epoch {r.epoch:g} of {epochs}, train loss "
                f"{r.train_loss:.4f}; about {clock.left() / 60:.0f} min of the final training left")

        result = fmnist.train(model, data, spec.train, seed=s, precision=precision, evaluate_test=False,
                              on_report=progress)
        clock.advance(before + result.images_seen / rate)
        accs.append(fmnist.accuracy(fmnist.predict(model, test.images, amp), test.labels))
        if first is None:
            first = model
    return first, spec, accs


def summary(accs: Sequence[float]) -> dict:
    """Mean and sample standard deviation of the runs' test accuracies (std None for one run)."""
    return {"test_acc": list(accs), "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else None}
