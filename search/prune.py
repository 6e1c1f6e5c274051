"""Pareto-aware pruning for multi-objective studies (Optuna's Trial.report and should_prune raise
NotImplementedError there; raising TrialPruned works and TPE learns from pruned trials).

Rungs are geometric in training images seen (budget/27, /9, /3 by default, none below
``min_images``), so on a CPU's short budget a rung can fall inside an epoch. At each rung a trial
records its validation accuracy as the user attribute ``rung_<images>``, which every worker
sharing the storage can read, and is compared with all trials that reached the same rung:

- rule (after Syne Tune's MOASHA): non-dominated sorting of accuracy and size at the rung, keep
  the best 1/factor by Pareto rank (ties within a rank by accuracy), prune the rest. "Size" is the
  study's cost objectives known from the spec (parameters, FLOPs, or both; parameters when the
  study has neither), so "no more parameters" below reads "no larger in each";
- the sharper rule the benchmark chose (``margin``, default one point): a trial is also pruned,
  whatever its place, when one with no more parameters was already ``margin`` more accurate at the
  same rung. Late in a study most new candidates land in the best third of the rung, mostly
  behind near-twins; this stops those that are clearly beaten (docs/benchmarks.md);
- a trial on the rung's front (rank 0) is never pruned: nothing with at most its parameters is
  at least as accurate, so a small model is not pruned just for being less accurate;
- nothing is pruned until ``min_trials`` trials have reached the rung;
- at the first rung, a curve still at chance is pruned whatever the others did;
- seed presets are never pruned: they are the references (their rung values still count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

import fmnist

from .pareto import nondominated_ranks

PRUNERS = ("pareto", "none")


def rung_images(budget: int, factor: int = 3, levels: int = 3, min_images: int = 2000) -> list[int]:
    """Rungs in images seen, ascending: budget / factor**k for k = levels..1, each >= min_images."""
    return sorted(r for r in (budget // factor ** k for k in range(1, levels + 1)) if r >= min_images)


@dataclass(frozen=True)
class Entry:
    number: int
    costs: tuple[int, ...]  # the study's size objectives known before training (params, FLOPs)
    acc: float


def no_larger(a: Entry, b: Entry) -> bool:
    """``a`` costs no more than ``b`` in every size objective."""
    return all(x <= y for x, y in zip(a.costs, b.costs))


def _size(e: Entry, names: tuple[str, ...]) -> str:
    return ", ".join(f"{c:,} {name}" for c, name in zip(e.costs, names))


def decide(me: Entry, others: list[Entry], factor: int, min_trials: int, margin: float | None = None,
           names: tuple[str, ...] = ("params",)) -> str | None:
    """Why ``me`` should be pruned at this rung, or None to let it continue."""
    everyone = [*others, me]
    n = len(everyone)
    if n < min_trials:
        return None
    ranks = nondominated_ranks([(-e.acc, *e.costs) for e in everyone])
    mine = ranks[-1]
    if mine == 0:
        return None
    if margin is not None:
        clearly = [e for e in others if no_larger(e, me) and e.acc >= me.acc + margin]
        if clearly:
            best = max(clearly, key=lambda e: (e.acc, [-c for c in e.costs]))
            return (f"trial {best.number} ({_size(best, names)}; this one {_size(me, names)}) was "
                    f"{100 * (best.acc - me.acc):.1f} points more accurate at the rung")
    order = sorted(range(n), key=lambda i: (ranks[i], -everyone[i].acc, everyone[i].costs))
    keep = math.ceil(n / factor)
    position = order.index(n - 1)
    if position < keep:
        return None
    return (f"Pareto rank {mine} ({position + 1}th of {n} at the rung; the best {keep} continue)")


class ParetoPruner:
    def __init__(self, study: optuna.Study, factor: int = 3, min_trials: int = 5, margin: float | None = 0.01,
                 costs: tuple[str, ...] = ("params",), chance: float = 0.1, chance_margin: float = 0.05):
        self.study, self.factor, self.min_trials, self.margin = study, factor, min_trials, margin
        self.costs = costs  # user attributes compared as sizes, all set before training
        self.at_chance = chance + chance_margin

    def entries_at(self, rung: int, exclude: int) -> list[Entry]:
        key = f"rung_{rung}"
        return [Entry(t.number, tuple(t.user_attrs[c] for c in self.costs), t.user_attrs[key])
                for t in self.study.get_trials(deepcopy=False,
                                               states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                if key in t.user_attrs and t.number != exclude]

    def hook(self, trial: optuna.Trial, sizes: dict[str, int], rungs: list[int],
             protected: bool) -> Callable[[fmnist.Report], str | None]:
        """The trainer's on_report: records each rung passed and returns a reason to stop, if any.

        ``sizes`` holds the trial's value of each cost (params, FLOPs), known from its spec."""
        costs = tuple(sizes[c] for c in self.costs)
        pending = list(rungs)

        def on_report(report: fmnist.Report) -> str | None:
            while pending and report.images_seen >= pending[0]:
                rung = pending.pop(0)
                if report.val_acc is None:
                    continue
                trial.set_user_attr(f"rung_{rung}", report.val_acc)
                if protected:
                    continue
                if rung == rungs[0] and report.val_acc < self.at_chance:
                    reason = f"still at chance ({100 * report.val_acc:.1f}% validation accuracy)"
                else:
                    reason = decide(Entry(trial.number, costs, report.val_acc),
                                    self.entries_at(rung, trial.number), self.factor, self.min_trials,
                                    self.margin, self.costs)
                if reason:
                    trial.set_user_attr("pruned_rung", rung)
                    return f"at rung {rung:,} images: {reason}"
            return None

        return on_report
