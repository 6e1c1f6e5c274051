"""The Pareto front of a study as a table, and which seed models each member dominates.

The seeds report test accuracy (a few report validation accuracy), so front members, chosen on
validation accuracy, are compared to the seeds' reported figures on test accuracy: a member
dominates a seed when it has no more parameters and a higher accuracy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from space import zoo

from .pareto import hypervolume_2d
from .report import format_table, pct


def seed_points() -> list[tuple[str, int, float]]:
    """(preset, parameters, reported accuracy) of every seed model with a reported accuracy."""
    return [(p.name, p.reported_params or p.params, p.reported_acc / 100)
            for p in zoo.PRESETS if p.reported_acc is not None]


def dominated_seeds(params: int, test_acc: float | None) -> list[str]:
    if test_acc is None:
        return []
    return [name for name, sp, sa in seed_points() if params <= sp and test_acc > sa]


def ours(t: FrozenTrial) -> bool:
    """A trial this tool trained: it carries the spec and its size (another tool's trials do not)."""
    return "spec" in t.user_attrs and "params" in t.user_attrs and "flops" in t.user_attrs


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal finished trials (on the study's own objectives) that this tool trained, smallest first."""
    return sorted((t for t in study.best_trials if ours(t)), key=lambda t: (t.user_attrs["params"], t.number))



def format_front(study: optuna.Study) -> str:
    members = front(study)
    if not members:
        foreign = [t for t in study.best_trials if not ours(t)]
        if foreign:
            return (f"the front holds {len(foreign)} trial(s) not trained by fmnist-search (no spec or "
                    f"parameter count recorded): nothing to show")
        return "no finished trials yet: the front is empty"
    rows, beaten = [], set()
    for t in members:
        a = t.user_attrs
        seeds = dominated_seeds(a["params"], a.get("test_acc"))
        beaten.update(seeds)
        rows.append([str(t.number), a.get("preset", ""), f"{a['params']:,}", f"{a['flops'] / 1e6:.2f}",
                     pct(a.get("val_acc")), pct(a.get("test_acc")), f"{a.get('epochs_run', 0):g}",
                     str(len(seeds))])
    table = format_table(["trial", "preset", "params", "MFLOPs", "val acc", "test acc", "epochs",
                          "seeds dominated"], rows)
    refs = seed_points()
    missed = [name for name, _, _ in refs if name not in beaten]
    summary = f"the front dominates {len(beaten)} of {len(refs)} seed models (their reported accuracy, on test accuracy)"
    if missed:
        summary += "; not dominated: " + ", ".join(missed)
    return "\n".join([table, summary, *seeds_trained_here(study)])


def seeds_trained_here(study: optuna.Study) -> list[str]:
    """Our own figure beside the reported one, for each seed model trained to the top rung here."""
    reported = {p.name: p for p in zoo.PRESETS}
    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = t.user_attrs.get("preset")
        if name in reported and t.user_attrs.get("test_acc") is not None:
            p = reported[name]
            said = "no figure" if p.reported_acc is None else f"{p.reported_acc:.2f}% ({p.reported_split})"
            lines.append(f"{name} trained here to the top rung (trial {t.number}): test "
                         f"{pct(t.user_attrs['test_acc'])}; the seed reports {said}")
    return lines


def format_counts(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    skipped = sum("skipped" in t.user_attrs for t in trials)
    by_state = {s: sum(t.state == s and "skipped" not in t.user_attrs for t in trials) for s in TrialState}
    return (f"study {study.study_name!r}: {by_state[TrialState.COMPLETE]} complete, "
            f"{by_state[TrialState.PRUNED]} pruned, {skipped} skipped, {by_state[TrialState.FAIL]} failed, "
            f"{by_state[TrialState.RUNNING]} running, {by_state[TrialState.WAITING]} waiting; "
            f"objectives {','.join(study.metric_names or [])}")


HV_REFERENCE = (0.30, 5_000_000)  # (error, parameters): the benchmarks' reference point


def hypervolume(trials: Iterable[FrozenTrial], metric: str = "val_acc",
                reference: tuple[float, int] = HV_REFERENCE) -> float:
    """Hypervolume of the finished ones among ``trials`` in (error, log10 params), both minimized."""
    points = [(1 - t.user_attrs[metric], math.log10(t.user_attrs["params"])) for t in trials
              if t.state == TrialState.COMPLETE and t.user_attrs.get(metric) is not None
              and t.user_attrs.get("params")]
    return hypervolume_2d(points, (reference[0], math.log10(reference[1])))


def images_trained(trials: Iterable[FrozenTrial]) -> int:
    """Training images processed by ``trials``, pruned ones included."""
    return sum(t.user_attrs.get("images_seen", 0) for t in trials)
