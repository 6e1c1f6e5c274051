"""The Optuna internals fmnist-search relies on, behind one door.

Optuna's public API has no way to reach a study's storage and ids, a trial's id, the SQLAlchemy
engine under an RDB storage (Optuna may put a cache in front of it), the system attributes of a
study or a trial, or the names of its tables; the tool needs each of them (claims in a table of
its own, notes and markers in system attributes, storage calls that ride out an outage, reading a
database without creating tables). Every use goes through a function here, and
``tests/test_optuna_api.py`` checks each assumption against the installed Optuna, so that a
release that moves one fails there, loudly, not somewhere in a running study. The range of
Optuna releases tested is pinned in pyproject.toml.
"""
from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

# The storage methods a worker's calls go through (the heartbeat's, the stale-trial check's and
# those the cache in front of an RDB storage calls included): wrapped by search.study.storage to
# wait out a database server's outage.
STORAGE_METHODS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "record_heartbeat",
    # private, called by Optuna's cache in front of an RDB storage
    "_get_stale_trial_ids", "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param")


def storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (possibly Optuna's cache in front of it)."""
    return study._storage


def backend(study: optuna.Study) -> BaseStorage:
    """The storage behind Optuna's cache: the RDB storage itself, where there is one."""
    s = storage(study)
    return getattr(s, "_backend", s)


def engine(study: optuna.Study):
    """The SQLAlchemy engine under the study's storage; None for a storage without one."""
    return getattr(backend(study), "engine", None)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return storage(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    storage(study).set_study_system_attr(study_id(study), key, value)


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    trial.storage.set_trial_system_attr(trial_id(trial), key, value)


def given_params(trial: optuna.Trial) -> dict[str, Any]:
    """The parameters a trial holds before its objective suggests anything: those stored with it
    (a retry queued by ``study.add_trial``) and those ``enqueue_trial`` fixed."""
    return {**getattr(trial, "_fixed_params", {}), **trial.params}


def fix_params(trial: optuna.Trial, params: dict[str, Any]) -> None:
    """Make the trial's next suggestions of these names answer these values, as enqueue_trial's do
    (and be stored with it as they are suggested)."""
    if params:
        trial._fixed_params = {**trial._fixed_params, **params}


def table_names() -> set[str]:
    """The tables an Optuna RDB storage creates (and Alembic's, which stamps their version)."""
    from optuna.storages._rdb import models
    return set(models.BaseModel.metadata.tables) | {"alembic_version"}


def is_rdb(storage_: BaseStorage) -> bool:
    return isinstance(storage_, RDBStorage)
