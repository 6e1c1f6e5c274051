"""A trial to kill or stop, for the fault tests and bench/workers.py: one in training."""
from __future__ import annotations

import subprocess
import time

import optuna
from optuna.trial import TrialState

from search.study import record


def trial_in_training(url: str, proc: subprocess.Popen, max_flops: int, not_pid: int | None = None,
                      every: float = 0.2, within: float = 180) -> tuple[int, int, int] | None:
    """(pid of its worker, number, study id) of a trial of the search ``proc`` that is training:
    past the free checks (a candidate over ``max_flops`` is skipped, PRUNED, a moment later) and
    still running when looked at. None if there was none within ``within`` seconds."""
    storage, deadline = optuna.storages.RDBStorage(url), time.monotonic() + within
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for s in storage.get_all_studies():
                for t in storage.get_all_trials(s._study_id, states=(TrialState.RUNNING,)):
                    pid = record.worker_of(t)[1]
                    if (pid and pid != not_pid and t.user_attrs.get(record.FLOPS, max_flops + 1) <= max_flops
                            and storage.get_trial(t._trial_id).state == TrialState.RUNNING):
                        return pid, t.number, s._study_id
            time.sleep(every)
    finally:
        storage.engine.dispose()
    return None
