"""The final training: each chosen architecture trained again from scratch, longer, on all 60k
training images, as NAS methods do once the search has ranked architectures on its budget.

The validation split has done its job by then (selection), so it is trained on too; test accuracy
is only reported. ``--seeds K`` trains K runs of each architecture (seeds ``--seed``,
``--seed``+1, ...) and reports their mean and spread; the exported model is the first seed's
run, chosen before training, never by its test accuracy. ``--retrain-minutes M`` sizes one
number of epochs for every model so that all runs together take about M minutes here, from each
model's measured training speed; ``--epochs`` gives it by hand; neither keeps each model's search
epochs.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from optuna.trial import FrozenTrial

import fmnist
from space import ModelSpec, build

from search.loop.plan import measure_rate
from search.study import record

MAX_EPOCHS = 300  # --retrain-minutes on a fast machine: more buys little on this data


@dataclass(frozen=True)
class Plan:
    epochs: dict[int, int]        # trial number -> epochs of its final training
    seeds: tuple[int, ...]
    rates: dict[int, float]       # trial number -> training images/s here
    train_images: int

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
         epochs: int | None = None) -> Plan:
    rates = {t.number: rate_here(t, specs[t.number], data, device, precision) for t in chosen}
    n = len(data.train)
    if epochs is not None:
        each = {t.number: epochs for t in chosen}
    elif minutes is not None:
        per_epoch = sum(n * seeds / rates[t.number] for t in chosen)
        e = max(1, min(MAX_EPOCHS, int(minutes * 60 / per_epoch)))
        each = {t.number: e for t in chosen}
    else:
        each = {t.number: specs[t.number].train.epochs for t in chosen}
    return Plan(each, tuple(seed + k for k in range(seeds)), rates, n)


def describe(p: Plan, search_epochs: dict[int, int], minutes: float | None) -> list[str]:
    """What the final training will do, said before it starts."""
    epochs = sorted(set(p.epochs.values()))
    runs = len(p.epochs) * len(p.seeds)
    lines = [f"final training: {len(p.epochs)} model(s) x {len(p.seeds)} seed(s) = {runs} run(s) of "
             f"{'/'.join(map(str, epochs))} epoch(s) on all {p.train_images:,} training images; about "
             f"{p.seconds() / 60:.0f} min here (from each model's measured speed)"
             + (f", sized to --retrain-minutes {minutes:g}" if minutes is not None else "")]
    short = [n for n, e in p.epochs.items() if e < search_epochs.get(n, 0)]
    if short:
        lines.append(f"note: {len(short)} model(s) get fewer epochs than the search trained them with "
                     f"({search_epochs[short[0]]}); their final figure may come out lower (more minutes help)")
    return lines


@dataclass
class Clock:
    """Progress over the whole final training, for an ETA that counts every run still to come.
    Work is counted in planned seconds (each model's images at its own measured speed), so that a
    small model finished fast does not make the large ones ahead look cheap: the plan's estimate
    until something has been trained, then the remaining estimate scaled by the pace so far."""
    plan: Plan
    done: float = 0.0  # planned seconds of the runs trained so far
    started: float = dataclasses.field(default_factory=time.monotonic)

    def left(self) -> float:
        elapsed = time.monotonic() - self.started
        if not self.done:
            return self.plan.seconds()
        return (self.plan.seconds() - self.done) * elapsed / self.done


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
            clock.done = before + r.images_seen / rate
            log(f"  {name} seed {s} ({k + 1}/{len(seeds)}): epoch {r.epoch:g} of {epochs}, train loss "
                f"{r.train_loss:.4f}; about {clock.left() / 60:.0f} min of the final training left")

        result = fmnist.train(model, data, spec.train, seed=s, precision=precision, evaluate_test=False,
                              on_report=progress)
        clock.done = before + result.images_seen / rate
        accs.append(fmnist.accuracy(fmnist.predict(model, test.images, amp), test.labels))
        if first is None:
            first = model
    return first, spec, accs


def summary(accs: Sequence[float]) -> dict:
    """Mean and sample standard deviation of the runs' test accuracies (std None for one run)."""
    return {"test_acc": list(accs), "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else None}
