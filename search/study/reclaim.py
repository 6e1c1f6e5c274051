"""Trials that died mid-training get their configuration queued again.

One mechanism serves three ways a trial can die: Ctrl-C in this process, a killed process on
this machine (found by its dead pid), and a worker elsewhere that stopped sending heartbeats
(Optuna's stale-trial check). Each time the trial is marked FAIL and a WAITING copy with the same
parameters is queued. Each worker looks for both kinds in the background while it trains
(``watch_stale``), so a dead worker's trial does not wait for another's trial to end.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Callable

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search.study import optuna_api, record

MAX_RETRY = 3


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the failed ``trial``'s configuration again (at most MAX_RETRY times per configuration).

    Like Optuna's RetryHeartbeatStaleTrialCallback, but carrying over only what identifies the
    candidate (its parameters, and the preset name of an enqueued seed), not the measurements of
    the attempt that died.
    """
    history = list(trial.system_attrs.get(record.RETRY_HISTORY, [])) + [trial.number]
    if len(history) > MAX_RETRY:
        return
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k == record.PRESET},
        system_attrs={record.FAILED_TRIAL: history[0], record.RETRY_HISTORY: history}))


def process_state(pid: int) -> str:
    """The process's state letter on Linux (R running, S sleeping, T stopped, Z zombie, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]  # after the name, which may hold spaces and ')'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker that its parent (--workers) has not reaped yet is a zombie: dead
        return process_state(pid) != "Z"
    except (OSError, IndexError):
        return True


def mark_worker(trial: optuna.Trial) -> None:
    trial.set_user_attr(record.WORKER, f"{socket.gethostname()}:{os.getpid()}")


def reclaim_orphans(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Fail and retry RUNNING trials whose worker process on this machine is gone."""
    host = socket.gethostname()
    reclaimed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, pid = record.worker_of(t)
        if worker_host != host or pid is None or _alive(pid):
            continue
        try:
            if storage.set_trial_state_values(optuna_api.trial_id(t), state=TrialState.FAIL):
                retry(study, storage.get_trial(optuna_api.trial_id(t)))
                reclaimed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return reclaimed


def release(study: optuna.Study, current: int | None) -> list[int]:
    """An interrupt (Ctrl-C, SIGTERM) stopped this process: every trial it holds is failed and its
    configuration queued again, whether it was in training (``current``, which Optuna has already
    marked FAIL) or only being created or taken from the queue (still RUNNING)."""
    from search.study.storage import held_trials  # the storage module builds on this one

    storage, released = optuna_api.storage(study), []
    for trial_id in sorted(held_trials(study)):
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                t = storage.get_trial(trial_id)
                retry(study, t)
                released.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # it ended meanwhile
    if current is not None and current not in released:
        interrupted = study.get_trials(deepcopy=False)[current]
        if interrupted.state == TrialState.FAIL:
            retry(study, interrupted)
            released.append(current)
    return released


def watch_stale(study: optuna.Study, say: Callable[[str], None]) -> threading.Event:
    """While this worker trains, at each of its heartbeats: trials whose worker stopped sending
    heartbeats (another machine's), and those whose process here is gone, are failed and queued
    again. Returns the event that stops the watch."""
    storage, stop = optuna_api.storage(study), threading.Event()
    every = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None

    def check() -> None:
        trials = study.get_trials(deepcopy=False)
        running, last = {t.number for t in trials if t.state == TrialState.RUNNING}, len(trials) - 1
        optuna.storages.fail_stale_trials(study)  # queues each through its callback, ``retry``
        for t in study.get_trials(deepcopy=False)[last + 1:]:
            failed = t.system_attrs.get(record.RETRY_HISTORY, [None])[-1]
            if failed in running:
                say(f"trial {failed} stopped sending heartbeats (its worker is gone): its configuration "
                    f"is queued again as trial {t.number}")
        for number in reclaim_orphans(study, storage):
            say(f"trial {number} was left running by a worker that is gone: its configuration is queued again")

    def loop() -> None:
        while not stop.wait(every):
            try:
                check()
            except Exception:  # the storage away a moment: the next round looks again
                continue

    if every:
        threading.Thread(target=loop, name="fmnist-stale-watch", daemon=True).start()
    return stop
