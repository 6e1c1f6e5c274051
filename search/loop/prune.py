"""Pareto-aware pruning for multi-objective studies (Optuna's Trial.report and should_prune raise
NotImplementedError there; raising TrialPruned works and TPE learns from pruned trials).

Successive halving in training images seen: the top rung is the study's whole budget (the model
as shipped), the rungs below it are budget/3, /9, /27, ... down to the first rung of a few
thousand images (``rung_images``). At each rung a trial records its validation accuracy (on a
fixed validation subset sized for the decision) as the user attribute ``rung_<images>``, which
every worker sharing the storage can read, and is compared with all trials that reached the same
rung:

- rule (after Syne Tune's MOASHA): non-dominated sorting of accuracy and size at the rung, keep
  the best 1/factor by Pareto rank (ties within a rank by accuracy), prune the rest. "Size" is the
  study's cost objectives known from the spec (parameters, FLOPs, or both; parameters when the
  study has neither), so "no more parameters" below reads "no larger in each";
- the sharper rule the benchmark chose (``margin``, default one point): a trial is also pruned,
  whatever its place, when a near-twin with no more parameters was already ``margin`` more
  accurate at the same rung (docs/benchmarks.md). Near-twins are of one family, plain or residual:
  a residual network starts slower than a plain one of its size and ends ahead of it (measured:
  3.8 points behind a smaller plain net at the first rung, ahead at the top), so an early lead of
  the other family says little about the end;
- a trial on the rung's front (rank 0) is never pruned: nothing with at most its parameters is
  at least as accurate, so a small model is not pruned just for being less accurate;
- too few peers at a rung (fewer than ``min_trials``): the decision falls back to the highest rung
  below with enough of them, keeping 1/factor per rung in between (the best 1/9 two rungs down).
  One worker decides in line, so without this its first few trials would all run to the top;
- cost-aware, against the finished trials: a trial is also pruned, its place at the rung
  notwithstanding, when a finished trial no larger already reached more than this trial can
  still reach by the top rung: its accuracy here plus the gain that finished trials of its
  schedule typically made from this rung on (their upper quartile), plus ``margin``. A large
  model that learns fast early is on every rung's front, yet training it to the top buys a point
  that a smaller finished one already holds; this stops it once that is clear;
- at the first rung, a curve still at chance is pruned whatever the others did;
- with a deadline, a trial that cannot reach the top rung before it stops at its next rung.

The warm starts are the ladder of known-good designs that the rungs compare against: they are
pruned only when still at chance, and otherwise trained to the top. Seed presets go through the
same rungs as every candidate, judged by what their own project reported rather than by how fast
they start: a seed continues while no finished trial with no
more parameters has reached the accuracy its project reports, and stops at its next rung once one
has (a design its own seed trains to 93.6% is not thrown away at 1/80 of its budget for starting
slowly, nor trained on once it is beaten).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

import fmnist

from search.pareto import nondominated_ranks
from search.study import record

PRUNERS = ("pareto", "none")
# The defaults, here once (the CLI's flags and the plan take them from here): rungs a factor of 3
# apart keeping the best third, decisions from 5 trials at a rung, a margin of one point (the
# benchmark's choice, docs/benchmarks.md), a first rung of at least 4,000 images.
FACTOR, MIN_TRIALS, MARGIN, FIRST_RUNG_IMAGES = 3, 5, 0.01, 4000


def rung_images(budget: int, factor: int = FACTOR, min_images: int = FIRST_RUNG_IMAGES) -> list[int]:
    """Rungs below the top in images seen, ascending: budget / factor**k for k = 1, 2, ... while
    at least ``min_images``. The top rung, the whole budget, is the end of training."""
    rungs, k = [], 1
    while budget // factor ** k >= min_images:
        rungs.append(budget // factor ** k)
        k += 1
    return rungs[::-1]


def rung_val_size(index: int, first: int = 2000) -> int:
    """Validation images for the decision at rung ``index`` (0 = first): accuracies are far apart
    early and close late, so the subset doubles per rung (standard error of one accuracy near 85%:
    0.8 point on 2,000 images, 0.4 on 8,000)."""
    return first * 2 ** index


@dataclass(frozen=True)
class Entry:
    number: int
    costs: tuple[int, ...]  # the study's size objectives known before training (params, FLOPs)
    acc: float
    family: str = ""        # record.family: near-twins for the margin rule are of one family


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
        clearly = [e for e in others if no_larger(e, me) and e.family == me.family and e.acc >= me.acc + margin]
        if clearly:
            best = max(clearly, key=lambda e: (e.acc, [-c for c in e.costs]))
            return (f"trial {best.number} ({_size(best, names)}; this one {_size(me, names)}) was "
                    f"{100 * (best.acc - me.acc):.1f} points more accurate at the rung")
    order = sorted(range(n), key=lambda i: (ranks[i], -everyone[i].acc, everyone[i].costs))
    survivors = math.ceil(n / factor)
    position = order.index(n - 1)
    if position < survivors:
        return None
    return (f"Pareto rank {mine} ({position + 1}th of {n} at the rung; the best {survivors} continue)")


CATCH_UP_QUANTILE = 0.75  # of the gains finished trials made from a rung to the top
MIN_FINISHED = 3          # finished trials that passed a rung before its gains are trusted


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def same_schedule(images: int | None, budget: int | None) -> bool:
    """Whether a finished trial of ``images`` trained as long as a budget of ``budget`` (either
    unknown: yes). Within 3%: whole batches differ by under 1%, one epoch in 15 by 6.7%."""
    return images is None or budget is None or abs(images - budget) <= 0.03 * budget


class ParetoPruner:
    def __init__(self, study: optuna.Study, factor: int = FACTOR, min_trials: int = MIN_TRIALS, margin: float | None = MARGIN,
                 cost_names: tuple[str, ...] = ("params",), chance: float = 0.1, chance_margin: float = 0.05):
        self.study, self.factor, self.min_trials, self.margin = study, factor, min_trials, margin
        self.cost_names = cost_names  # user attributes compared as sizes, all set before training
        self.at_chance = chance + chance_margin

    def entries_at(self, rung: int, exclude: int) -> list[Entry]:
        key = record.rung_key(rung)
        return [Entry(t.number, tuple(t.user_attrs[c] for c in self.cost_names), t.user_attrs[key], record.family(t.user_attrs))
                for t in self.study.get_trials(deepcopy=False,
                                               states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
                if key in t.user_attrs and t.number != exclude and all(c in t.user_attrs for c in self.cost_names)]

    def finished(self) -> list[tuple[tuple[int, ...], float, dict[int, float], int | None]]:
        """(costs, final validation accuracy, accuracy at each rung, images trained) of every finished trial."""
        return [(tuple(t.user_attrs[c] for c in self.cost_names), t.user_attrs[record.VAL_ACC], record.rungs_of(t),
                 t.user_attrs.get(record.IMAGES_SEEN))
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if record.VAL_ACC in t.user_attrs and all(c in t.user_attrs for c in self.cost_names)]

    def cannot_catch_up(self, costs: tuple[int, ...], acc: float, rung: int, budget: int | None = None) -> str | None:
        """Why a trial at ``acc`` on ``rung`` cannot end above a finished trial no larger (None: it may).
        The gains counted are those of finished trials that trained as long as this one will
        (``budget`` images, give or take the batch rounding): a cheap net trained longer gains more."""
        done = self.finished()
        gains = [final - at[rung] for _, final, at, seen in done if rung in at and same_schedule(seen, budget)]
        if len(gains) < MIN_FINISHED:
            return None
        reach = acc + max(0.0, quantile(gains, CATCH_UP_QUANTILE)) + (self.margin or 0.0)
        better = [(c, final) for c, final, _, _ in done if all(x <= y for x, y in zip(c, costs)) and final >= reach]
        if not better:
            return None
        c, final = max(better, key=lambda b: b[1])
        return (f"a finished trial no larger ({_size(Entry(0, c, 0), self.cost_names)}) reached {100 * final:.1f}%; "
                f"this one, at {100 * acc:.1f}% here, would end near {100 * (reach - (self.margin or 0)):.1f}% "
                f"(finished trials gained up to {100 * quantile(gains, CATCH_UP_QUANTILE):.1f} points from this "
                f"rung, 3 in 4 of {len(gains)})")

    def beaten_seed(self, costs: tuple[int, ...], reported: float) -> str | None:
        """Why a seed model stops: a finished trial no larger reached what its project reports."""
        better = [(c, final) for c, final, _, _ in self.finished()
                  if all(x <= y for x, y in zip(c, costs)) and final > reported]
        if not better:
            return None
        c, final = max(better, key=lambda b: b[1])
        return (f"a finished trial no larger ({_size(Entry(0, c, 0), self.cost_names)}) reached {100 * final:.2f}% "
                f"validation accuracy, above the {100 * reported:.2f}% this seed's project reports")

    def judge(self, number: int, costs: tuple[int, ...], mine: dict[int, float], rungs: list[int],
              index: int, family: str = "") -> str | None:
        """Why the trial should stop at rungs[index] (None: continue), given its accuracy at each
        rung passed (``mine``); falls back to lower rungs while this one has too few peers."""
        for j in range(index, -1, -1):
            if rungs[j] not in mine:
                continue
            others = self.entries_at(rungs[j], number)
            if len(others) + 1 < self.min_trials:
                continue
            factor = self.factor ** (index - j + 1)
            reason = decide(Entry(number, costs, mine[rungs[j]], family), others, factor, self.min_trials,
                            self.margin, self.cost_names)
            if reason and j < index:
                reason += f" (at rung {rungs[j]:,}: too few trials at this one yet)"
            return reason
        return None

    def hook(self, trial: optuna.Trial, sizes: dict[str, int], rungs: list[int], budget: int,
             deadline: float | None = None, reported: float | None = None, warm_start: bool = False,
             family: str = "") -> Callable[[fmnist.Report], str | None]:
        """The trainer's on_report: records each rung passed and returns a reason to stop, if any.

        ``sizes`` holds the trial's value of each cost (params, FLOPs), known from its spec;
        ``budget`` is the top rung; ``deadline`` a time.monotonic() by which training must end;
        ``reported``: a seed model's accuracy as its project reports it (judged by that instead);
        ``warm_start``: one of the ladder (stopped only at chance); ``family``: ``record.family``."""
        costs = tuple(sizes[c] for c in self.cost_names)
        mine: dict[int, float] = {}
        started = time.monotonic()

        def on_report(report: fmnist.Report) -> str | None:
            # The trainer says which rungs this evaluation serves (more than one on a tiny split).
            for rung in (r for r in report.checkpoints if r in rungs and report.val_acc is not None):
                mine[rung] = report.val_acc
                trial.set_user_attr(record.rung_key(rung), report.val_acc)
                if rung == rungs[0] and report.val_acc < self.at_chance:
                    reason = f"still at chance ({100 * report.val_acc:.1f}% validation accuracy)"
                elif warm_start:
                    reason = None
                elif reported is not None:
                    reason = self.beaten_seed(costs, reported)
                else:
                    reason = (self.judge(trial.number, costs, mine, rungs, rungs.index(rung), family)
                              or self.cannot_catch_up(costs, report.val_acc, rung, budget))
                if reason:
                    trial.set_user_attr(record.PRUNED_RUNG, rung)
                    return f"at rung {rung:,} images: {reason}"
            if deadline is not None and report.images_seen < budget:
                rate = report.images_seen / max(1e-9, time.monotonic() - started)
                needed, left = (budget - report.images_seen) / rate, deadline - time.monotonic()
                if needed > left:
                    trial.set_user_attr(record.PRUNED_RUNG, report.images_seen)
                    return (f"out of time: about {needed:.0f} s of training left to the top rung, "
                            f"{max(0.0, left):.0f} s to the deadline")
            return None

        return on_report
