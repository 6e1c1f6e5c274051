"""A result outlives its trial being failed as stale under a worker that is still alive.

Other workers fail a trial whose heartbeat has been silent for longer than the grace period, and
queue its configuration again: its worker is presumed dead. A worker that was only paused (its
process stopped, its machine asleep or cut off from the database for a while) comes back to a FAIL
trial, and Optuna refuses every write to it, the result included. So a trial's writes go through
its ``TrialWriter``, which remembers them; when the trial turns out to have been failed, its
result is added to the study as a new trial (``record.KEPT_FROM`` names the failed one) with its
weights (``rescue``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search.study import optuna_api, record
from search.study.artifacts import WeightsStore, store_weights


class TrialWriter:
    """Every write of one trial: remembered, and no longer sent once the trial has been failed by
    another worker; and what the objective ended with, for a successor to carry. ``trial`` is the
    Optuna trial itself, for sampling and for notes."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.number: int = trial.number
        self.written: dict[str, Any] = {}  # user attributes set through this object
        self.system_written: dict[str, Any] = {}
        self.lost = False  # the trial was failed under this worker
        self.state: TrialState | None = None  # how the objective ended: COMPLETE or PRUNED
        self.values: Sequence[float] | None = None
        self.model: torch.nn.Module | None = None  # weights to store, if the store did not get them

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {**self.trial.user_attrs, **self.written}

    def set_user_attr(self, key: str, value: Any) -> None:
        self.written[key] = value
        self.send(lambda: self.trial.set_user_attr(key, value))

    def set_system_attr(self, key: str, value: Any) -> None:
        # Optuna has no public setter of a trial's system attributes; its storage API is public.
        self.system_written[key] = value
        self.send(lambda: optuna_api.set_trial_system_attr(self.trial, key, value))

    def send(self, write: Callable[[], Any]) -> None:
        """Write to the trial, unless (or until) it has been failed by another worker."""
        if self.lost:
            return
        try:
            write()
        except UpdateFinishedTrialError:
            self.lost = True

    def save_weights(self, model: torch.nn.Module, store: WeightsStore) -> None:
        self.model = model  # until stored: a successor of the trial stores them if this trial cannot
        artifact_ids: list[str] = []
        self.send(lambda: artifact_ids.append(store_weights(model, store, self.trial)))
        if artifact_ids:
            self.set_user_attr(record.WEIGHTS, artifact_ids[0])
            self.model = None

    def end(self, state: TrialState, values: Sequence[float] | None = None) -> None:
        self.state, self.values = state, values

    def was_failed_under_us(self) -> bool:
        """Failed by another worker while this one ran it (not by the objective's own error)."""
        if self.lost:
            return True
        return (self.state is not None
                and self.trial.storage.get_trial(optuna_api.trial_id(self.trial)).state == TrialState.FAIL)


def rescue(study: optuna.Study, kept: TrialWriter, store: WeightsStore | None) -> FrozenTrial | None:
    """Add the result of ``kept``'s failed trial to the study as a new trial; None if it has none
    (the objective had not ended, or ended in an error)."""
    if kept.state is None:
        return None
    storage, failed = optuna_api.storage(study), kept.trial.storage.get_trial(optuna_api.trial_id(kept.trial))
    # Created running, so that its weights can be listed under it, then ended as the objective was.
    trial_id = storage.create_new_trial(optuna_api.study_id(study), template_trial=optuna.trial.create_trial(
        state=TrialState.RUNNING, params=failed.params, distributions=failed.distributions,
        user_attrs={**kept.user_attrs, record.KEPT_FROM: failed.number},
        system_attrs={k: v for k, v in {**failed.system_attrs, **kept.system_written}.items() if k == record.SPEC}))
    successor = storage.get_trial(trial_id)
    if kept.model is not None and store is not None:
        artifact_id = store_weights(kept.model, store, successor, storage=storage)
        storage.set_trial_user_attr(trial_id, record.WEIGHTS, artifact_id)
    storage.set_trial_state_values(trial_id, state=kept.state,
                                   values=kept.values if kept.state == TrialState.COMPLETE else None)
    return storage.get_trial(trial_id)
