"""The Pareto front of a study as the CLI shows it, and which seed models each member dominates.

The seeds report test accuracy (a few report validation accuracy), so front members, chosen on
validation accuracy, are compared to the seeds' reported figures on test accuracy: a member
dominates a seed when it has no more parameters and a higher accuracy.
"""
from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from space import zoo

from . import record
from .table import format_table, pct


def seed_points() -> list[tuple[str, int, float]]:
    """(preset, parameters, reported accuracy) of every seed model with a reported accuracy."""
    return [(p.name, p.reported_params or p.params, p.reported_acc / 100)
            for p in zoo.PRESETS if p.reported_acc is not None]


def dominated_seeds(params: int, test_acc: float | None) -> list[str]:
    if test_acc is None:
        return []
    return [name for name, sp, sa in seed_points() if params <= sp and test_acc > sa]


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Pareto-optimal finished trials (on the study's own objectives) that this tool trained, smallest first."""
    return sorted((t for t in study.best_trials if record.is_ours(t)), key=lambda t: (t.user_attrs[record.PARAMS], t.number))



def format_front(study: optuna.Study) -> str:
    members = front(study)
    if not members:
        foreign = [t for t in study.best_trials if not record.is_ours(t)]
        if foreign:
            return (f"the front holds {len(foreign)} trial(s) not trained by fmnist-search (no spec or "
                    f"parameter count recorded): nothing to show")
        return "no finished trials yet: the front is empty"
    rows, beaten = [], set()
    for t in members:
        a = t.user_attrs
        seeds = dominated_seeds(a[record.PARAMS], a.get(record.TEST_ACC))
        beaten.update(seeds)
        rows.append([str(t.number), a.get(record.PRESET, ""), f"{a[record.PARAMS]:,}", f"{a[record.FLOPS] / 1e6:.2f}",
                     pct(a.get(record.VAL_ACC)), pct(a.get(record.TEST_ACC)), f"{a.get(record.EPOCHS_RUN, 0):g}",
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
    lines = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        name = t.user_attrs.get(record.PRESET)
        if name in zoo.names() and t.user_attrs.get(record.TEST_ACC) is not None:
            p = zoo.preset(name)
            said = "no figure" if p.reported_acc is None else f"{p.reported_acc:.2f}% ({p.reported_split})"
            lines.append(f"{name} trained here to the top rung (trial {t.number}): test "
                         f"{pct(t.user_attrs[record.TEST_ACC])}; the seed reports {said}")
    return lines


def format_counts(study: optuna.Study) -> str:
    trials = study.get_trials(deepcopy=False)
    kinds = Counter(record.kind(t) for t in trials)
    counts = ", ".join(f"{kinds[k]} {k}" for k in ("complete", "pruned", "skipped", "failed", "running", "waiting"))
    return f"study {study.study_name!r}: {counts}; objectives {','.join(study.metric_names or [])}"
