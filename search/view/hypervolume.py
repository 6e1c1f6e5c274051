"""Is the search still paying? The front's hypervolume against the compute spent, as it grows.

The hypervolume is the benchmarks' (``search.view.quality``): the area the front dominates in
(validation error, log10 parameters), both minimized, up to a reference point. The point is fixed
and stored on the study when it is created (``REFERENCE``; a study from before gets it on its next
run, its trials untouched), so that every figure of one study is comparable. Compute is counted
two ways: training images (every trial's, pruned ones included) and device-seconds (each trial's
training and evaluation time, summed over workers). The history is taken in the order trials
finished; the hypervolume on test error is computed beside it, for information only.

The stopping rule (``--stop-when-flat``): the study ends when the validation hypervolume gained
over the last half of the compute spent is less than a fraction of the hypervolume (0.5% by
default), once at least ``MIN_FINISHED`` trials finished. The window grows with the study, so the
plateaus a study goes through between finds (shorter than half of it) do not end it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.pareto import hypervolume_2d
from search.study import record

REFERENCE = record.HV_REFERENCE_POINT  # stored on each study when it is created (search.study.opening)
FLAT_FRACTION = 0.005  # --stop-when-flat without a value
MIN_FINISHED = 20      # trials trained (to the top or to a rung) before the rule may end a study


def reference(study: optuna.Study) -> tuple[float, int]:
    ref = study.user_attrs.get(record.HV_REFERENCE) or REFERENCE
    return float(ref["error"]), int(ref["params"])


def point(t: FrozenTrial | dict, metric: str = record.VAL_ACC) -> tuple[float, float] | None:
    a = t if isinstance(t, dict) else t.user_attrs
    if a.get(metric) is None or not a.get(record.PARAMS):
        return None
    return 1 - a[metric], math.log10(a[record.PARAMS])


def volume(points: Sequence[tuple[float, float]], ref: tuple[float, int]) -> float:
    return hypervolume_2d(list(points), (ref[0], math.log10(ref[1])))


@dataclass(frozen=True)
class Step:
    """The study after one more trial finished."""
    number: int
    images: int        # training images, all trials so far
    seconds: float     # device-seconds (training and evaluation), all trials so far
    hv: float          # validation hypervolume of the complete trials so far
    test_hv: float     # the same on test error, for information


def history(trials: Sequence[FrozenTrial], ref: tuple[float, int]) -> list[Step]:
    """One step per finished (complete or pruned) trial, in the order they finished."""
    done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete),
                  key=lambda t: (t.datetime_complete, t.number))
    images, seconds, val, test, steps = 0, 0.0, [], [], []
    for t in done:
        a = t.user_attrs
        images += a.get(record.IMAGES_SEEN, 0)
        seconds += a.get(record.TRAIN_SECONDS, 0.0) + a.get(record.EVAL_SECONDS, 0.0)
        if t.state == TrialState.COMPLETE and record.is_ours(t):
            for points, metric in ((val, record.VAL_ACC), (test, record.TEST_ACC)):
                p = point(t, metric)
                if p:
                    points.append(p)
        steps.append(Step(t.number, images, seconds, volume(val, ref), volume(test, ref)))
    return steps


def gain_over(steps: Sequence[Step], share: float) -> tuple[float, int]:
    """(hypervolume gained, training images spent) over the last ``share`` of the compute."""
    if not steps:
        return 0.0, 0
    start = steps[-1].images * (1 - share)
    before = [s for s in steps if s.images <= start]
    base = before[-1].hv if before else 0.0
    return steps[-1].hv - base, steps[-1].images - (before[-1].images if before else 0)


def flat(steps: Sequence[Step], fraction: float, trained: int) -> str | None:
    """Why the study should stop (the rule of the module docstring), or None."""
    if trained < MIN_FINISHED or not steps or steps[-1].hv <= 0:
        return None
    gained, spent = gain_over(steps, 0.5)
    if gained >= fraction * steps[-1].hv:
        return None
    return (f"the front's hypervolume grew by {gained:.4f} ({100 * gained / steps[-1].hv:.2f}%) over the last half "
            f"of the compute ({spent:,} of {steps[-1].images:,} training images), under --stop-when-flat "
            f"{fraction:g} ({100 * fraction:g}%)")


def trial_gain(trials: Sequence[FrozenTrial], attrs: dict, ref: tuple[float, int]) -> float:
    """How much a trial finishing with ``attrs`` raises the validation hypervolume of the complete
    trials ``trials`` (0 when it does not enter the front)."""
    points = [p for t in trials if t.state == TrialState.COMPLETE and record.is_ours(t) for p in [point(t)] if p]
    mine = point(attrs)
    return volume(points + [mine], ref) - volume(points, ref) if mine else 0.0


def describe(steps: Sequence[Step], ref: tuple[float, int]) -> str:
    """The line ``show`` prints: the current figure and its gain over the last quarter of the compute."""
    if not steps:
        return "hypervolume: no trial finished yet"
    gained, spent = gain_over(steps, 0.25)
    last = steps[-1]
    return (f"hypervolume (validation error x log10 params, reference {100 * ref[0]:g}% error at {ref[1]:,} "
            f"params): {last.hv:.4f} (test, for information: {last.test_hv:.4f}); gained {gained:.4f} over the "
            f"last quarter of the compute ({spent:,} of {last.images:,} training images, "
            f"{last.seconds / 3600:.2f} device-hours in all)")
