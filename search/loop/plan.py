"""What a search was asked to do, checked and frozen once: the plan, and the budget it trains under.

``fmnist-search`` builds one ``Plan`` from what the user typed, the study's contract (a rerun or
another worker takes the study's split and budget) and the budget measured here, before anything
is written; the study is then opened against it once, and the loop runs it. Nothing in the loop
reads the command line.

The budget: the top rung is the model as shipped, the whole training split for E epochs. E is
``--epochs``, else sized to ``--timeout`` by a brief measurement of a mid-sized net (so that about
``TOP_RUNG_SHARE`` top-rung trainings fit, at most ``MAX_EPOCHS``), else the device's default.
With --timeout on a CPU (and no --epochs or --no-stretch-cheap), a candidate cheaper than that net
trains longer, for about the time the mid-sized net's E epochs take (``Plan.epochs_for``), so that
the small end of the front is not judged half-trained.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

import fmnist
from space import ModelSpec, build, pass_flops
from space.sample import REFERENCE, fixed, smallest

from search.loop import prune


@dataclass(frozen=True)
class Profile:
    """What a trial that reaches the top rung is trained on: the model as shipped."""
    name: str
    epochs: int                   # top rung: the whole training split, this many epochs
    max_flops: int | None         # candidates above this are skipped at no cost

    def describe(self, n_train: int, n_val: int, rungs: list[int]) -> str:
        ladder = ", ".join(f"{r:,}" for r in rungs)
        return (f"profile {self.name}: top rung {n_train:,} training images x {self.epochs} epochs "
                f"= {n_train * self.epochs:,} images; rungs at {ladder or 'none'}; "
                f"{n_val:,} validation images for selection")


# Without --timeout, a CPU skips candidates above 64 MFLOPs (ResNet-style nets of 16-32-64 channels
# and three blocks a stage fit); with one, a candidate is skipped when its top-rung training alone
# would take more than TOP_SECONDS_SHARE of it (estimated from its FLOPs and the measured rate).
PROFILES = {"cuda": Profile("gpu", 20, None), "cpu": Profile("cpu", 10, 64_000_000)}
TOP_SECONDS_SHARE = 1 / 4
MAX_EPOCHS = {"cuda": 40, "cpu": 15}
# With --timeout, one top-rung training of the reference net takes about this fraction of it:
# the ladder below the top costs about as much again per rung, and the front wants several models.
TOP_RUNG_SHARE = 16
# With --timeout on a CPU (unless --no-stretch-cheap), a candidate cheaper than the reference net trains
# for as long as the reference would, at most this many times the top rung's epochs (and
# MAX_EPOCHS): a net of a few thousand parameters is still far from its level after the epochs
# that size a mid-sized one, and costs a fifth of its time an image (measured: 65.7% at 1,466
# parameters after 2 epochs).
STRETCH_MAX = 4


def pick_profile(device: torch.device, epochs: int | None = None, timeout: float | None = None,
                 n_train: int = 50_000, rate: Callable[[], float] | None = None) -> Profile:
    """The top rung's epochs: --epochs, else sized so --timeout holds about TOP_RUNG_SHARE top-rung
    trainings at the measured ``rate`` (images/s of the reference net), else the device's default."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    base = PROFILES[kind]
    if epochs is None and timeout is not None and rate is not None:
        epochs = max(1, min(MAX_EPOCHS[kind], round(rate() * timeout / TOP_RUNG_SHARE / max(1, n_train))))
    return dataclasses.replace(base, epochs=epochs or base.epochs)


def reference_spec() -> ModelSpec:
    """The mid-sized net of the stages space whose training speed sizes budgets."""
    return fixed(REFERENCE)


def reference_rate(data: fmnist.Splits, precision: str, seed: int = 0) -> float:
    """Training images/s of the reference net on this device, briefly measured."""
    return measure_rate(reference_spec(), data, precision, seed)


@dataclass(frozen=True)
class Pace:
    """Seconds to train one image here, as a line in the net's forward FLOPs (one pass), fitted to
    two nets measured here: the reference and the space's smallest. FLOPs alone miss the fixed
    cost an image that dominates small nets on a CPU (measured: the 1,466-parameter net has 1/26
    of the reference's FLOPs and trains 4.8 times as fast)."""
    fixed: float      # seconds an image, whatever the net
    per_flop: float   # seconds an image per forward FLOP

    def seconds(self, n_pass: int, images: int = 1) -> float:
        return images * (self.fixed + self.per_flop * n_pass)

    @classmethod
    def fit(cls, a: tuple[int, float], b: tuple[int, float]) -> "Pace":
        """The line through (FLOPs, images/s) of two nets; a faster big net (noise) gives a flat line."""
        (fa, ra), (fb, rb) = sorted([a, b])
        per_flop = max(0.0, (1 / rb - 1 / ra) / (fb - fa)) if fb > fa else 0.0
        return cls(max(0.0, 1 / rb - per_flop * fb), per_flop)


def measure_pace(data: fmnist.Splits, precision: str, space: str, rate: Callable[[], float], seed: int = 0) -> Pace:
    """The pace here, from the reference net's ``rate`` and a brief measurement of ``space``'s smallest net."""
    ref = reference_spec()
    small = dataclasses.replace(ref, arch=smallest(space))
    return Pace.fit((pass_flops(ref.arch), rate()), (pass_flops(small.arch), measure_rate(small, data, precision, seed)))


def measure_rate(spec: ModelSpec, data: fmnist.Splits, precision: str, seed: int = 0, steps: int = 24,
                 repeats: int = 3, compile: bool = False) -> float:
    """Training images/s of ``spec`` on the device ``data`` is on, briefly measured: the fastest of
    ``repeats`` runs after one that chooses kernels and fills caches. The fastest, as timeit advises,
    because whatever else the machine does (a process starting beside this one) only slows a run,
    and a budget rounded to whole epochs must not flip with such noise."""
    bs = min(spec.train.batch_size, len(data.train))
    n = min(len(data.train), bs * steps)
    no_val = fmnist.Split(data.val.images[:0], data.val.labels[:0])  # training speed alone
    probe = fmnist.Splits(fmnist.Split(data.train.images[:n], data.train.labels[:n]), no_val, data.test)
    model = build(spec.arch, seed=seed)
    one_epoch = dataclasses.replace(spec.train, epochs=1)
    rates = [fmnist.train(model, probe, one_epoch, seed=seed, precision=precision, compile=compile,
                          every_epoch=False, evaluate_test=False).images_per_s for _ in range(1 + max(1, repeats))]
    return max(rates[1:])  # rates[0] is the warm-up's


@dataclass(frozen=True)
class Plan:
    """Everything the loop needs, fixed before the study is opened (the defaults are the CLI's)."""
    objectives: tuple[str, ...] = ("acc", "params")
    trials: int = 100
    epochs: int = 10                      # of the top rung (the budget)
    space: str = "stages"
    max_params: int | None = None
    max_flops: int | None = None
    profile_max_flops: int | None = None  # the device profile's cap; --max-flops replaces it
    pace: Pace | None = None              # training time an image here, measured (with --timeout on a CPU)
    stretch_epochs: int | None = None     # the most epochs a cheap candidate trains (None: all train `epochs`)
    max_top_seconds: float | None = None  # skip a candidate whose top-rung training would take longer
    timeout: float | None = None          # seconds left for the loop
    seed: int = 0
    precision: str = "auto"
    compile: bool = False
    max_skips: int = 200                  # consecutive free skips before giving up on the space
    pruner: str = "pareto"
    prune_factor: int = prune.FACTOR
    prune_min_trials: int = prune.MIN_TRIALS
    prune_margin: float | None = prune.MARGIN  # None: MOASHA's rule alone
    rung_min_images: int = prune.FIRST_RUNG_IMAGES
    stop_flat: float | None = None        # --stop-when-flat (search.view.hypervolume)

    @property
    def stretches(self) -> bool:
        """Whether cheap candidates train longer than the top rung's epochs (timed, not --no-stretch-cheap)."""
        return self.pace is not None and bool(self.stretch_epochs) and self.stretch_epochs > self.epochs

    def epochs_for(self, n_pass: int) -> int:
        """The epochs a candidate of ``n_pass`` forward FLOPs trains: the top rung's, or for a net
        cheaper than the reference, as many as the reference's training time buys it (capped)."""
        if not self.stretches:
            return self.epochs
        ratio = self.pace.seconds(pass_flops(reference_spec().arch)) / max(1e-12, self.pace.seconds(n_pass))
        return max(self.epochs, min(self.stretch_epochs, round(self.epochs * ratio)))

    @classmethod
    def of(cls, args, objectives: tuple[str, ...], space: str, profile: Profile, pace: Callable[[], Pace],
           seconds_left: float | None) -> "Plan":
        """The plan of a search command: ``args`` as parsed (the contract already resolved into
        them), the budget's ``profile``, the ``pace`` here (measured only where it is needed).
        Sized epochs stretch for cheap nets (unless --no-stretch-cheap); --epochs are every candidate's."""
        timed = args.timeout is not None and profile.max_flops is not None  # a CPU with a deadline
        stretch = (min(MAX_EPOCHS["cpu"], STRETCH_MAX * profile.epochs)
                   if getattr(args, "stretch_cheap", True) and not args.epochs else None)
        return cls(objectives=objectives, trials=args.trials, epochs=profile.epochs, space=space,
                   max_params=args.max_params, max_flops=args.max_flops,
                   profile_max_flops=None if timed else profile.max_flops,
                   pace=pace() if timed else None, stretch_epochs=stretch if timed else None,
                   max_top_seconds=args.timeout * TOP_SECONDS_SHARE if timed else None,
                   timeout=seconds_left, seed=args.seed, precision=args.precision, compile=args.compile,
                   pruner=args.pruner, prune_factor=args.prune_factor, prune_min_trials=args.prune_min_trials,
                   prune_margin=args.prune_margin, rung_min_images=args.rung_min_images, stop_flat=args.stop_when_flat)
