"""A small study on synthetic data, end to end through main(), and what it leaves in the storage."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

import fmnist
from search.loop import options
from search.study import storage as storages
from search.study import record
from search.cli import main
from search.loop.run import Search, SearchConfig, counts_toward_trials
from space import ModelSpec, flops, param_count
from wsgi_server import serving

# Cheap candidates only: --max-flops skips the heavy ones before training, at no cost.
FAST = ["--epochs", "1", "--val-size", "100", "--max-flops", "3000000", "--quiet", "--seed", "1", "--no-warm-start"]


def run(synth_dir, db, *extra, study="s"):
    return main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", study,
                 *FAST, *extra])


def load(db, study="s"):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{db}")


@pytest.fixture(scope="module")
def small_study(synth_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("study") / "s.db"
    assert run(synth_dir, db, "--trials", "3", "--no-enqueue-seeds") == 0
    return db


def test_storage_holds_named_objectives_and_every_attribute(small_study):
    study = load(small_study)
    assert study.metric_names == ["acc", "params"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len([t for t in study.trials if counts_toward_trials(t)]) == 3 and done
    for t in done:
        a = t.user_attrs
        spec = ModelSpec.from_json(record.spec_text(t))
        assert a["params"] == param_count(spec.arch) == t.values[1]
        assert a["flops"] == flops(spec.arch) <= 3_000_000
        assert t.values[0] == a["val_acc"] and 0 <= a["test_acc"] <= a["test_top5"] <= 1
        assert len(a["curve"]) == a["epochs_run"] == 1 and a["curve"][0][1] == pytest.approx(a["val_acc"], abs=1e-4)
        assert a["images_seen"] > 0 and a["train_seconds"] > 0 and a["images_per_s"] > 0
        assert a["device"] == "cpu" and a["worker"]


def test_show_prints_the_front(small_study, capsys):
    assert main(["show", "--storage", f"sqlite:///{small_study}", "--study", "s"]) == 0
    out = capsys.readouterr().out
    front = load(small_study).best_trials
    assert "val acc" in out and "test acc" in out and "seeds dominated" in out
    assert all(f"{t.user_attrs['params']:,}" in out for t in front)


def test_rerun_continues_to_the_total_keeping_finished_trials(synth_dir, tmp_path):
    db = tmp_path / "r.db"
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds") == 0
    before = {t.number: t.values for t in load(db).trials if t.state == TrialState.COMPLETE}
    assert run(synth_dir, db, "--trials", "4", "--no-enqueue-seeds") == 0
    study = load(db)
    assert sum(counts_toward_trials(t) for t in study.trials) == 4
    assert all(study.trials[n].values == v for n, v in before.items())


def test_seeds_are_enqueued_once_and_compared(synth_dir, tmp_path, capsys):
    db = tmp_path / "seeds.db"
    assert run(synth_dir, db, "--trials", "1", "--max-params", "120000") == 0
    study = load(db)
    presets = [t.user_attrs["preset"] for t in study.trials if "preset" in t.user_attrs]
    assert len(presets) == len(set(presets)) == 17
    over = [t for t in study.trials if "preset" in t.user_attrs and t.user_attrs["params"] > 120_000]
    assert over and all(t.user_attrs["skipped"].startswith("over --max-") and "val_acc" not in t.user_attrs
                        for t in over)
    assert "of 17 seed models" in capsys.readouterr().out
    assert run(synth_dir, db, "--trials", "1", "--max-params", "120000") == 0
    assert len([t for t in load(db).trials if "preset" in t.user_attrs]) == 17  # not queued again


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


def test_an_identical_candidate_is_not_trained_again(synth_dir, tmp_path):
    db = tmp_path / "d.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds") == 0
    study = load(db)
    first = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    study.enqueue_trial(first.params)
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds") == 0
    copy = load(db).trials[first.number + 1]
    assert copy.params == first.params
    assert copy.user_attrs["skipped"] == f"duplicate of trial {first.number}" and "val_acc" not in copy.user_attrs


def test_two_workers_that_drew_the_same_candidate_train_it_once():
    study = optuna.create_study(directions=["maximize", "minimize"])
    first, second = study.ask(), study.ask()  # both RUNNING, as in two processes
    for t in (first, second):
        t.set_user_attr("spec", "{same}")  # schema 1 kept the spec here; it is read all the same
    search = Search(study, SearchConfig(), data=None)
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


def test_a_lost_race_to_create_the_tables_is_retried(tmp_path, monkeypatch):
    real, calls = storages.TrackedStorage, []

    def lose_first_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, "table studies already exists")
        return real(*args, **kwargs)

    monkeypatch.setattr(storages, "TrackedStorage", lose_first_race)
    storage = storages.open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(calls) == 2 and optuna.get_all_study_names(storage) == []


OPENER = """
import os, sys, time
from pathlib import Path
from search.study.storage import open_storage
ready, n = Path(sys.argv[2]), int(sys.argv[3])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < n:  # a barrier: every process has imported everything
    time.sleep(0.001)
open_storage(sys.argv[1])
"""


def test_workers_opening_a_new_database_at_once_all_succeed(tmp_path):
    """The start-up race of issue 12 (UNIQUE constraint failed: alembic_version.version_num, or
    'table already exists'): six processes, three rounds, each on a database that does not exist yet."""
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        ready = tmp_path / f"ready{round_}"
        ready.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(ready), "6"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err


def test_a_storage_that_keeps_failing_is_one_line(tmp_path, monkeypatch):
    def always_locked(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("BEGIN", {}, "database is locked")

    monkeypatch.setattr(storages, "TrackedStorage", always_locked)
    monkeypatch.setattr(storages.time, "sleep", lambda s: None)
    with pytest.raises(storages.UsageError, match="cannot open .*database is locked"):
        storages.open_storage(f"sqlite:///{tmp_path / 'locked.db'}")


@pytest.mark.parametrize("argv, expected", [
    (["--trials", "0"], "--trials"),
    (["--trials", "many"], "--trials"),
    (["--epochs", "-1"], "--epochs"),
    (["--max-params", "0"], "--max-params"),
    (["--objective", "acc,speed"], "unknown objective 'speed' (valid: acc, params, flops, latency)"),
    (["--objective", "acc,flops"], "optimizes acc,params, not acc,flops; use another --study"),
    (["--sampler", "cmaes"], "--sampler"),
    (["--prune-margin", "2"], "--prune-margin: must be between 0 and 1"),
    (["--prune-margin", "lots"], "--prune-margin"),
])
def test_bad_input_is_one_line_and_loses_nothing(argv, expected, synth_dir, small_study, capsys):
    before = [(t.number, t.state, t.values) for t in load(small_study).trials]
    assert run(synth_dir, small_study, "--trials", "3", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert [(t.number, t.state, t.values) for t in load(small_study).trials] == before


@pytest.mark.parametrize("url, expected", [
    ("not-a-url", "--storage not-a-url: cannot open"),
    ("sqlite:////nonexistent/folder/x.db", "folder /nonexistent/folder does not exist"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot open"),
])
def test_bad_storage_is_one_line(url, expected, synth_dir, capsys):
    assert main(["--storage", url, "--data-dir", str(synth_dir), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_data_folder_without_files_is_one_line(tmp_path, capsys):
    assert main(["--storage", f"sqlite:///{tmp_path / 'x.db'}", "--data-dir", str(tmp_path), "--no-download",
                 *FAST]) == 2
    assert "Fashion-MNIST not found" in capsys.readouterr().err


def test_show_unknown_study_is_one_line(small_study, capsys):
    assert main(["show", "--storage", f"sqlite:///{small_study}", "--study", "nope"]) == 2
    assert "no such study" in capsys.readouterr().err and "s" in capsys.readouterr().err + "s"


def test_optuna_dashboard_serves_the_study_over_http(small_study):
    import optuna_dashboard
    with serving(optuna_dashboard.wsgi(f"sqlite:///{small_study}")) as base:
        studies_json = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())
        (summary,) = [s for s in studies_json["study_summaries"] if s["study_name"] == "s"]
        detail = json.loads(urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=30).read())
        assert urllib.request.urlopen(f"{base}/dashboard", timeout=30).status == 200
    assert detail["objective_names"] == ["acc", "params"]  # from study.set_metric_names
    assert detail["best_trials"], "the Pareto front is shown"
    attrs = {a["key"] for t in detail["trials"] for a in t["user_attrs"]}
    assert {"params", "flops", "test_acc", "test_top5", "curve", "summary", "outcome", "images_per_s"} <= attrs
    # The spec is a system attribute: as a user attribute it made every row of the trial table tall.
    assert "spec" not in attrs and "fmnist:spec" not in attrs


def test_objective_names_parse():
    assert options.parse_objectives("acc, params,latency") == ("acc", "params", "latency")
    with pytest.raises(fmnist.UsageError, match="twice"):
        options.parse_objectives("acc,acc")
    with pytest.raises(fmnist.UsageError, match="at least one"):
        options.parse_objectives(" , ")


def test_all_four_objectives_are_returned_and_named(synth_dir, tmp_path):
    db = tmp_path / "o.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds", "--objective", "acc,params,flops,latency",
               study="o") == 0
    study = load(db, "o")
    assert study.metric_names == ["acc", "params", "flops", "latency"]
    t = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    assert t.values == [t.user_attrs["val_acc"], t.user_attrs["params"], t.user_attrs["flops"],
                        t.user_attrs["latency_ms"]]
    assert 0 < t.user_attrs["latency_ms"] < 10_000


@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_other_samplers_run(sampler, synth_dir, tmp_path):
    db = tmp_path / f"{sampler}.db"
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds", "--sampler", sampler) == 0
    assert sum(counts_toward_trials(t) for t in load(db).trials) == 2


def test_timeout_stops_starting_trials(synth_dir, tmp_path):
    db = tmp_path / "t.db"
    assert run(synth_dir, db, "--trials", "1000", "--no-enqueue-seeds", "--timeout", "1") == 0
    assert 1 <= sum(counts_toward_trials(t) for t in load(db).trials) < 1000


def test_live_status_line_on_a_terminal(small_study):
    import io

    from search.view.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term, log = Terminal(), io.StringIO()
    progress = Progress(enabled=True, stream=term, out=log)
    progress.trial_started(7)
    study = load(small_study)
    progress.trial_finished(study, study.trials, 3, 10)
    progress.write("trial 7: done")
    progress.close()
    assert "3/10 done" in term.getvalue() and "front" in term.getvalue() and "ETA" in term.getvalue()
    assert log.getvalue() == "trial 7: done\n"
    quiet = Terminal()
    Progress(enabled=False, stream=quiet, out=io.StringIO()).trial_started(1)
    assert quiet.getvalue() == ""


def test_every_complete_trial_reached_the_top_rung_and_seeds_are_pruned_like_any_other(synth_dir, tmp_path):
    db = tmp_path / "top.db"
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", "s", "--quiet",
                 "--val-size", "100", "--epochs", "3", "--trials", "8", "--rung-min-images", "100",
                 "--prune-min-trials", "3", "--seed", "4"]) == 0
    trials = [t for t in load(db).trials if "skipped" not in t.user_attrs]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and [t for t in trials if t.user_attrs.get("warm_start") is not None]
    for t in complete:  # the front is made of models trained on the whole budget, as shipped
        spec = ModelSpec.from_json(record.spec_text(t))
        bs = min(spec.train.batch_size, 500)
        assert t.user_attrs["images_seen"] == 500 // bs * bs * 3 and "test_acc" in t.user_attrs
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all("test_acc" not in t.user_attrs and t.user_attrs["pruned_reason"].startswith("at rung")
               for t in pruned)
    assert [t for t in pruned if "preset" in t.user_attrs]  # the seeds are candidates, not exempt


def test_warm_starts_are_queued_once_and_are_points_of_the_space():
    from optuna.trial import FixedTrial
    from search.loop.run import enqueue_warm_starts
    from space.sample import WARM_STARTS, sample
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert enqueue_warm_starts(study) == len(WARM_STARTS) and enqueue_warm_starts(study) == 0
    sizes = [param_count(sample(FixedTrial(p), 1).arch) for p in WARM_STARTS]
    assert sizes[:4] == sorted(sizes[:4]) and sizes[0] < 5_000 and sizes[3] > 50_000  # a ladder, small to medium


def test_the_budget_follows_the_timeout_and_is_kept_by_the_study(synth_dir, tmp_path, capsys):
    import torch
    from search.loop.run import MAX_EPOCHS, TOP_RUNG_SHARE, pick_profile
    cpu = torch.device("cpu")
    assert pick_profile(cpu).epochs == 10 and pick_profile(cpu, epochs=3).epochs == 3
    # 50,000 images at 5,000 images/s: 10 s per epoch; an hour holds 16 top rungs of 22.5 epochs
    assert pick_profile(cpu, timeout=3600, n_train=50_000, rate=lambda: 5000.0).epochs == min(
        MAX_EPOCHS["cpu"], round(5000 * 3600 / TOP_RUNG_SHARE / 50_000))
    assert pick_profile(cpu, timeout=60, n_train=50_000, rate=lambda: 5000.0).epochs == 1
    db = tmp_path / "b.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds") == 0
    assert load(db).user_attrs["budget"]["epochs"] == 1
    assert load(db).user_attrs["objectives"] == {"acc": "validation accuracy", "params": "trainable parameters"}
    capsys.readouterr()
    assert run(synth_dir, db, "--trials", "2", "--no-enqueue-seeds", "--epochs", "2") == 2
    assert "--epochs 2: study 's' was created with --epochs 1" in capsys.readouterr().err


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


def test_a_search_without_validation_images_is_refused_at_once(synth_dir, tmp_path, capsys):
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{tmp_path / 'v.db'}", "--val-size", "0",
                 "--trials", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--val-size 0" in err[0] and not (tmp_path / "v.db").exists()


def test_the_duration_of_a_study_is_estimated_up_front():
    from search.commands import estimate
    line = estimate(200, 750_000, 5000.0)  # 150 s per top rung; 200 trials of a fifth of it each
    assert "about 150 s" not in line and "about 2 min" in line and "roughly 1.7 h" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs the right to mount, as root in CI's sandbox; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root, or no mount in this sandbox)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk):
    """Take every byte left on ``disk`` with one file, disk/filler."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_mid_study_is_one_line_and_keeps_what_was_finished(small_disk, synth_dir, capsys):
    db = small_disk / "full.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds") == 0
    before = {t.number: t.values for t in load(db).trials if t.state == TrialState.COMPLETE}
    assert before
    fill(small_disk)
    capsys.readouterr()
    assert run(synth_dir, db, "--trials", "4", "--no-enqueue-seeds") == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:"), err
    (small_disk / "filler").unlink()
    study = load(db)
    assert {t.number: t.values for t in study.trials if t.number in before} == before
    assert not [t for t in study.trials if t.state == TrialState.RUNNING] or run(
        synth_dir, db, "--trials", "2", "--no-enqueue-seeds") == 0  # a rerun reclaims what the fault left
    assert not [t for t in load(db).trials if t.state == TrialState.RUNNING]


def _rows(db):
    """The trials table, read with a connection closed at once (an open one keeps the disk busy)."""
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    finally:
        con.close()


def test_a_study_on_a_read_only_disk_is_one_line_and_unharmed(small_disk, synth_dir):
    db = small_disk / "ro.db"
    first = subprocess.run([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                            f"sqlite:///{db}", "--study", "s", *FAST, "--trials", "1", "--no-enqueue-seeds"],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = _rows(db)
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True).returncode == 0
    try:
        again = subprocess.run([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                                f"sqlite:///{db}", "--study", "s", *FAST, "--trials", "3", "--no-enqueue-seeds"],
                               capture_output=True, text=True)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], capture_output=True)
    err = [e for e in again.stderr.strip().splitlines() if not e.startswith("notice:")]
    assert again.returncode == 2 and len(err) == 1 and err[0].startswith("fmnist-search: error:"), again.stderr
    assert "read" in err[0].lower() and "Traceback" not in again.stderr
    assert _rows(db) == before


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, small_study, synth_dir, capsys):
    fill(small_disk)
    capsys.readouterr()
    assert main(["export-best", "--storage", f"sqlite:///{small_study}", "--study", "s", "--data-dir", str(synth_dir),
                 "--out", str(small_disk / "export")]) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
    assert len(err) == 1 and "--out" in err[0] and "nothing was replaced" in err[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_the_eta_counts_the_seeds_still_queued():
    import io

    from optuna.distributions import FloatDistribution

    from search.view.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(3):  # seeds trained so far: none of them counts toward --trials
        study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"x": 0.5},
                                            distributions={"x": FloatDistribution(0, 1)},
                                            user_attrs={"preset": f"seed{i}"}))
    for i in range(5):
        study.enqueue_trial({}, user_attrs={"preset": f"later{i}"})
    term = Terminal()
    progress = Progress(enabled=True, stream=term, out=io.StringIO())
    progress.trial_finished(study, study.trials, 0, 10)
    line = term.getvalue()
    assert "0/10 done" in line and "ETA -" not in line and "ETA " in line


def test_the_dashboard_command_serves_the_study_on_this_machine(small_study):
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "dashboard", "--storage", f"sqlite:///{small_study}",
                             "--study", "s", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and "/dashboard" in line, (line, proc.stderr.read() if proc.poll() else "")
        base = line.split("http://", 1)[1].split("/dashboard")[0]
        with urllib.request.urlopen(f"http://{base}/api/studies", timeout=30) as r:
            studies_json = json.loads(r.read())
        assert [s["study_name"] for s in studies_json["study_summaries"]] == ["s"]
        with urllib.request.urlopen(f"http://{base}/dashboard", timeout=30) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ctrl_c_in_a_terminal_prints_no_traceback(synth_dir, tmp_path):
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                             f"sqlite:///{tmp_path / 'i.db'}", "--study", "i", "--epochs", "200", "--val-size", "100",
                             "--trials", "5", "--quiet", "--no-enqueue-seeds"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until a trial is training
        if line.startswith("study 'i'"):
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in out


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


@pytest.mark.parametrize("device, message", [("cuda:x", "expected auto, cpu, cuda or cuda:K"),
                                             ("tpu:0", "expected auto, cpu, cuda or cuda:K")])
def test_bad_devices_are_one_line(device, message, capsys):
    assert main(["train", "--preset", "seed003", "--device", device]) == 2
    assert message in capsys.readouterr().err
