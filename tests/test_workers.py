"""Several workers on one study: each candidate trained once, each queued trial taken once, one contract."""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.loop import options
from search.loop.plan import Plan
from search.loop.run import Search, counts_toward_trials
from search.study import record
from search.testing.support import FAST, load_study as load, run_search as run


def test_two_workers_that_drew_the_same_candidate_train_it_once():
    study = optuna.create_study(directions=["maximize", "minimize"])
    first, second = study.ask(), study.ask()  # both RUNNING, as in two processes
    for t in (first, second):
        t.set_user_attr("spec", "{same}")  # schema 1 kept the spec here; it is read all the same
    search = Search(study, Plan(), data=None)
    assert search.duplicate_of("{same}", second.number) == first.number  # the lower number trains it
    assert search.duplicate_of("{same}", first.number) is None


WORKERS = ["--epochs", "1", "--val-size", "100", "--max-flops", "1000000", "--trials", "4",
           "--rung-min-images", "100", "--prune-min-trials", "3", "--quiet"]


def test_two_workers_started_together_share_one_new_study(synth_dir, tmp_path):
    db = tmp_path / "w.db"  # does not exist yet: both race to create its tables and the study
    argv = [sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}",
            "--study", "w", *WORKERS]
    procs = [subprocess.Popen([*argv, "--worker-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = load(db, "w").trials
    assert not [t for t in trials if t.state == TrialState.FAIL]
    assert 4 <= sum(counts_toward_trials(t) for t in trials) <= 5  # the other may be mid-trial at the end
    trained_presets = [t.user_attrs["preset"] for t in trials if "preset" in t.user_attrs
                       and t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "skipped" not in t.user_attrs]
    assert trained_presets and len(trained_presets) == len(set(trained_presets))


POPPER = """
import sys, optuna
from optuna.trial import TrialState
from search.study.storage import open_storage
study = optuna.load_study(study_name="q", storage=open_storage(sys.argv[1]))
while True:
    trial = study.ask()  # takes the next enqueued trial, or makes a new one when none is left
    if trial.number >= int(sys.argv[2]):
        study.tell(trial, state=TrialState.FAIL)
        break
    print(trial.number)
"""


def test_workers_never_take_the_same_enqueued_trial(tmp_path):
    url, queued = f"sqlite:///{tmp_path / 'q.db'}", 60
    study = optuna.create_study(study_name="q", storage=url)
    for i in range(queued):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    procs = [subprocess.Popen([sys.executable, "-c", POPPER, url, str(queued)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    taken = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        taken += [int(n) for n in out.split()]
    assert sorted(taken) == list(range(queued))  # each exactly once: none lost, none run twice


@pytest.mark.parametrize("flag, value, stored", [("--seed", "2", "--seed 1"), ("--val-size", "50", "--val-size 100"),
                                                 ("--train-subset", "300", "--train-subset not given")])
def test_a_worker_with_another_split_is_refused_in_one_line(synth_dir, small_study, flag, value, stored, capsys):
    """A study is a contract: every worker trains on the same split, subset and budget."""
    before = len(load(small_study).trials)
    capsys.readouterr()
    argv = ["--data-dir", str(synth_dir), "--storage", f"sqlite:///{small_study}", "--study", "s",
            *FAST]
    i = argv.index(flag) if flag in argv else None
    if i is not None:
        argv[i + 1] = value
    else:
        argv += [flag, value]
    assert main([*argv, "--trials", "9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} {value}: study 's' was created with {stored};" in err, err
    assert len(load(small_study).trials) == before  # nothing written


def test_a_worker_keeping_weights_in_another_folder_is_refused_in_one_line(synth_dir, tmp_path, capsys):
    """Issue 10: a worker on another machine kept weights in its own folder, out of export-best's
    reach. The study remembers its folder; a worker that cannot see it is refused before it trains."""
    db, shared, local = tmp_path / "a.db", tmp_path / "shared", tmp_path / "local"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds", "--artifact-dir", str(shared)) == 0
    before = len(load(db).trials)
    capsys.readouterr()
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds", "--artifact-dir", str(local)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--artifact-dir {local}: study 's' keeps its weights in " in err, err
    assert f":{shared.resolve()} (where its first worker wrote them)" in err
    assert len(load(db).trials) == before and not local.exists()  # nothing written
    (shared.parent / "mounted-here").symlink_to(shared)  # the same folder, mounted elsewhere
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds", "--artifact-dir",
               str(shared.parent / "mounted-here")) == 0


def test_workers_share_one_study_each_with_its_own_candidates(synth_dir, tmp_path, capsys):
    db = tmp_path / "w.db"
    assert run(synth_dir, db, "--trials", "6", "--no-enqueue-seeds", "--workers", "2") == 0
    out = capsys.readouterr().out
    assert "starting 1 more worker(s) on the study" in out and out.count("the front dominates") == 1
    study = load(db)
    trained = [t for t in study.trials if record.was_trained(t)]
    # How many trials the second worker takes depends on how soon it is up (here, trials take a
    # moment and a process seconds): what must hold is the total, and nothing trained twice.
    assert 6 <= sum(counts_toward_trials(t) for t in study.trials) <= 7
    specs = [record.spec_text(t) for t in trained]
    assert len(specs) == len(set(specs))  # no candidate trained twice
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_worker_ids_give_their_own_streams_and_keep_the_split():
    from optuna.distributions import IntDistribution
    first = [options.make_sampler("tpe", options.worker_seed(7, k)) for k in (0, 0, 1)]
    draws = []
    for sampler in first:
        study = optuna.create_study(sampler=sampler)
        draws.append([study.ask({"x": IntDistribution(0, 10**6)}).params["x"] for _ in range(3)])
    assert draws[0] == draws[1] != draws[2]  # reproducible per worker, different between workers
    assert options.worker_seed(7, 0) == 7  # a lone worker's study is what it always was


