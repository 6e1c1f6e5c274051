"""A study: loaded or created on a storage, and checked against what the user asked for.

What it optimizes (its objectives, in order) and the record schema its trials were written with
are checked here; a study that disagrees is refused with one line, before anything is written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import optuna
from optuna.storages import RDBStorage

from fmnist.errors import UsageError

from search.study import record
from search.study.storage import SCHEMA_ATTEMPTS


def check_study(storage: RDBStorage, name: str, objectives: Sequence[str],
                sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study | None:
    """The existing study ``name`` (None if there is none); refuses one that another tool created
    or that optimizes other objectives. Reads only."""
    if name not in set(optuna.get_all_study_names(storage)):
        return None
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    for _ in range(SCHEMA_ATTEMPTS - 1):
        if study.metric_names:
            break
        time.sleep(0.2)  # a worker that has just created it names the objectives a moment later
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    record.check_schema(name, study.user_attrs)
    if not record.is_our_study(study):
        raise UsageError(f"--study {name!r}: a study of that name exists in this storage, but fmnist-search did "
                         f"not create it; nothing was written to it (use another --study)")
    found = tuple(study.metric_names or ())
    if found != tuple(objectives):
        raise UsageError(
            f"study {name!r} optimizes {','.join(found) or 'unnamed objectives'}, not "
            f"{','.join(objectives)}; use another --study (e.g. --study {name}-{'-'.join(objectives)})")
    return study


def open_study(storage: RDBStorage, name: str, objectives: Sequence[str],
               sampler: optuna.samplers.BaseSampler, existing: optuna.Study | None = None) -> optuna.Study:
    """The study ``name``: ``existing`` (already found and checked by ``check_study``), else created;
    a study another worker created meanwhile is checked as any existing one."""
    study = existing
    if study is not None:
        if study.user_attrs.get(record.SCHEMA, 1) < record.SCHEMA_VERSION:
            study.set_user_attr(record.SCHEMA, record.SCHEMA_VERSION)  # its new trials are written so
        record.mark_ours(study)  # a study of an earlier release, recognised by its records
        keep_reference(study)  # one from before the reference point was stored: now, its trials untouched
        return study
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=[record.OBJECTIVES[o][0] for o in objectives])
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it since the check
        return check_study(storage, name, objectives, sampler)
    record.mark_ours(study)  # before the objectives are named: a worker that sees those sees this
    study.set_metric_names(list(objectives))
    study.set_user_attr(record.SCHEMA, record.SCHEMA_VERSION)
    # For people reading the study (the dashboard shows study attributes): what each value is.
    study.set_user_attr(record.OBJECTIVE_MEANINGS, {o: record.OBJECTIVES[o][1] for o in objectives})
    keep_reference(study)
    return study


def keep_reference(study: optuna.Study) -> None:
    """The hypervolume's reference point, fixed on the study so that all its figures compare."""
    if record.HV_REFERENCE not in study.user_attrs:
        study.set_user_attr(record.HV_REFERENCE, record.HV_REFERENCE_POINT)


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


# What every worker of a study must agree on, named as the ``Budget`` names it: the flag that sets
# it and its value when neither the study nor the command gives one. Workers that differed would
# compare trials on other validation images or budgets, and the front would mix them.
CONTRACT = {"split_seed": ("--seed", 0), "val_images": ("--val-size", 10_000),
            "train_subset": ("--train-subset", None), "epochs": ("--epochs", None), "space": ("--space", "stages")}
# What a budget written before a key existed meant by its absence.
BEFORE_THE_KEY = {"train_subset": None, "space": "blocks"}


@dataclass(frozen=True)
class Contract:
    """The split and budget a command runs under: the study's, or for a new study what was given."""
    split_seed: int
    val_images: int
    train_subset: int | None
    epochs: int | None  # None: not fixed yet (a new study sizes it from --timeout or the device)
    space: str

    def describe(self) -> str:
        """As the flags that would give it, for the line a rerun prints."""
        parts = [f"--seed {self.split_seed}", f"--val-size {self.val_images}",
                 f"--train-subset {self.train_subset}" if self.train_subset else "all training images"]
        if self.epochs is not None:
            parts.append(f"--epochs {self.epochs}")
        return ", ".join(parts + [f"--space {self.space}"])


def resolve_contract(name: str, stored: dict | None, given: dict) -> Contract:
    """The contract this command runs under: for a new study what was given (or the defaults), for
    an existing one the study's own values. A value given that differs from the study's is
    refused in one line; one not given is taken from the study."""
    resolved = {}
    for key, (flag, default) in CONTRACT.items():
        mine = given.get(key)
        if not stored:
            resolved[key] = default if mine is None else mine
            continue
        have = stored.get(key, BEFORE_THE_KEY.get(key, mine if mine is not None else default))
        if mine is not None and mine != have:
            said = "not given" if have is None else have
            raise UsageError(f"{flag} {mine}: study {name!r} was created with {flag} {said}; every worker and "
                             f"every rerun of a study uses its split and budget (leave {flag} out to take the "
                             f"study's, or use another --study; give each worker its own --worker-id for its own "
                             f"candidates)")
        resolved[key] = have
    return Contract(**resolved)
