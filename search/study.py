"""A study: loaded or created on a storage, and checked against what the user asked for.

What it optimizes (its objectives, in order) and the record schema its trials were written with
are checked here; a study that disagrees is refused with one line, before anything is written.
"""
from __future__ import annotations

import time
from typing import Sequence

import optuna
from optuna.storages import RDBStorage

from fmnist.errors import UsageError

from . import record
from .options import OBJECTIVES
from .storage import SCHEMA_ATTEMPTS


def check_study(storage: RDBStorage, name: str, objectives: Sequence[str],
                sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study | None:
    """The existing study ``name`` (None if there is none); refuses one with other objectives."""
    if name not in set(optuna.get_all_study_names(storage)):
        return None
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    for _ in range(SCHEMA_ATTEMPTS - 1):
        if study.metric_names:
            break
        time.sleep(0.2)  # a worker that has just created it names the objectives a moment later
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    record.check_schema(name, study.user_attrs)
    found = tuple(study.metric_names or ())
    if found != tuple(objectives):
        raise UsageError(
            f"study {name!r} optimizes {','.join(found) or 'unnamed objectives'}, not "
            f"{','.join(objectives)}; use another --study (e.g. --study {name}-{'-'.join(objectives)})")
    return study


def open_study(storage: RDBStorage, name: str, objectives: Sequence[str],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Load the study ``name`` or create it; refuse one that optimizes other objectives."""
    study = check_study(storage, name, objectives, sampler)
    if study is not None:
        if study.user_attrs.get(record.SCHEMA, 1) < record.SCHEMA_VERSION:
            study.set_user_attr(record.SCHEMA, record.SCHEMA_VERSION)  # its new trials are written so
        return study
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=[OBJECTIVES[o][0] for o in objectives])
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it since the check
        return check_study(storage, name, objectives, sampler)
    study.set_metric_names(list(objectives))
    study.set_user_attr(record.SCHEMA, record.SCHEMA_VERSION)
    # For people reading the study (the dashboard shows study attributes): what each value is.
    study.set_user_attr(record.OBJECTIVE_MEANINGS, {o: OBJECTIVES[o][1] for o in objectives})
    return study


def load_existing(storage: RDBStorage, name: str) -> optuna.Study:
    """A study that must exist already (for show and export)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        raise UsageError(f"--study {name!r}: no such study in this storage "
                         f"(studies: {', '.join(names) or 'none'})") from None
    record.check_schema(name, study.user_attrs)
    return study


# What every worker of a study must agree on, with the option that sets it: the budget attribute's
# key -> the flag a worker gives. Workers that differed would compare trials on other validation
# images or budgets, and the front would mix them.
CONTRACT = {"split_seed": "--seed", "val_images": "--val-size", "train_subset": "--train-subset",
            "epochs": "--epochs"}


def check_contract(name: str, stored: dict | None, wanted: dict) -> None:
    """Refuse a worker whose data split or budget differs from the one the study was created with."""
    for key, flag in CONTRACT.items():
        if not stored or key not in wanted or wanted[key] is None:
            continue
        have = stored.get(key, None if key == "train_subset" else wanted[key])  # absent in older studies
        if have != wanted[key]:
            said = "not given" if have is None else have
            raise UsageError(f"{flag} {wanted[key]}: study {name!r} was created with {flag} {said}; every worker "
                             f"of a study must use the same split and budget (give each worker its own "
                             f"--worker-id for its own candidates, or use another --study)")
