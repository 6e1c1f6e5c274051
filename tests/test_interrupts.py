"""A worker that dies or is interrupted mid-trial: what it leaves in the study, and what the user sees."""
from __future__ import annotations

import subprocess
import sys

from optuna.trial import TrialState

import fmnist

from search.testing.support import load_study as load, run_search as run
from search.testing.victim import trial_in_training

KILLED_WORKER = """
import os, sys, optuna
from search.loop import options
from search.study import opening as studies, reclaim, storage as storages
from space.sample import sample
storage = storages.open_storage(sys.argv[1])
study = studies.open_study(storage, "s", ("acc", "params"), options.make_sampler("random", 5))
trial = study.ask()
reclaim.mark_worker(trial)
sample(trial, 1)
os._exit(9)  # dies like kill -9, mid-trial
"""


def test_a_trial_left_running_by_a_killed_process_is_failed_and_retried(synth_dir, tmp_path, capsys):
    db = tmp_path / "k.db"
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, f"sqlite:///{db}"], capture_output=True)
    assert proc.returncode == 9, proc.stderr
    orphan = load(db).trials[0]
    assert orphan.state == TrialState.RUNNING
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds", "--max-flops", "100000000") == 0
    assert "left running by a process that is gone" in capsys.readouterr().out
    study = load(db)
    assert study.trials[0].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == orphan.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_ctrl_c_keeps_finished_trials_and_queues_the_interrupted_one(synth_dir, tmp_path, monkeypatch):
    db = tmp_path / "c.db"
    real_train, calls = fmnist.train, []

    def interrupt_second(*args, **kwargs):
        if kwargs.get("evaluate_test", True):  # a trial's training, not the start-up rate measurement
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(fmnist, "train", interrupt_second)
    assert run(synth_dir, db, "--trials", "3", "--no-enqueue-seeds") == 130
    study = load(db)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(done) == 1 and len(failed) == 1 and len(waiting) == 1
    assert waiting[0].params == failed[0].params
    monkeypatch.setattr(fmnist, "train", real_train)
    assert run(synth_dir, db, "--trials", "3", "--no-enqueue-seeds") == 0
    assert load(db).trials[waiting[0].number].state in (TrialState.COMPLETE, TrialState.PRUNED)


def test_ctrl_c_in_a_terminal_prints_no_traceback(synth_dir, tmp_path):
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                             f"sqlite:///{tmp_path / 'i.db'}", "--study", "i", "--epochs", "200", "--val-size", "100",
                             "--trials", "5", "--quiet", "--no-enqueue-seeds", "--max-flops", "3000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert trial_in_training(f"sqlite:///{tmp_path / 'i.db'}", proc, 3_000_000), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in out


