"""Measures of a search's result for the benchmarks: hypervolume of a front, compute spent."""
from __future__ import annotations

import math
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from . import record
from .pareto import hypervolume_2d

HV_REFERENCE = (0.30, 5_000_000)  # (error, parameters): the benchmarks' reference point


def hypervolume(trials: Iterable[FrozenTrial], metric: str = record.VAL_ACC,
                reference: tuple[float, int] = HV_REFERENCE) -> float:
    """Hypervolume of the finished ones among ``trials`` in (error, log10 params), both minimized."""
    points = [(1 - t.user_attrs[metric], math.log10(t.user_attrs[record.PARAMS])) for t in trials
              if t.state == TrialState.COMPLETE and t.user_attrs.get(metric) is not None
              and t.user_attrs.get(record.PARAMS)]
    return hypervolume_2d(points, (reference[0], math.log10(reference[1])))


def images_trained(trials: Iterable[FrozenTrial]) -> int:
    """Training images processed by ``trials``, pruned ones included."""
    return sum(t.user_attrs.get(record.IMAGES_SEEN, 0) for t in trials)
