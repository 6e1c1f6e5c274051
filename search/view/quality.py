"""Measures of a search's result for the benchmarks: hypervolume of a front, compute spent.

The hypervolume is the one the study's own figure shows (``search.view.hypervolume``), so that a
benchmark's number and the dashboard's agree for the same trials."""
from __future__ import annotations

from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from search.study import record
from search.view.hypervolume import REFERENCE, point, volume

HV_REFERENCE = (REFERENCE["error"], REFERENCE["params"])  # (error, parameters): the benchmarks' reference point


def hypervolume(trials: Iterable[FrozenTrial], metric: str = record.VAL_ACC,
                reference: tuple[float, int] = HV_REFERENCE) -> float:
    """Hypervolume of the finished ones among ``trials`` in (error, log10 params), both minimized."""
    points = [p for t in trials if t.state == TrialState.COMPLETE for p in [point(t, metric)] if p]
    return volume(points, reference)


def images_trained(trials: Iterable[FrozenTrial]) -> int:
    """Training images processed by ``trials``, pruned ones included."""
    return sum(t.user_attrs.get(record.IMAGES_SEEN, 0) for t in trials)
