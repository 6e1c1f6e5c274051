"""Nothing of the user's is lost, and a refused command writes nothing: train --save, another tool's
study or database, the study contract on a rerun, refused commands, SIGTERM, hostile files."""
from __future__ import annotations

import gzip
import hashlib
import os
import signal
import sqlite3
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import fmnist
from search import commands
from search.handover import export, target
from search.loop import workers
from search.study import optuna_api, record
from search.cli import main
from space import ArchSpec, ConvBlock, ModelSpec
from search.testing.support import cli, small_search
from search.testing.synthetic import write_dataset
from search.testing.victim import trial_in_training


def _one_error(capsys) -> str:
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith(("notice:", "warning:"))]
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:"), err
    return err[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): (_digest(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


@pytest.fixture
def restore_signals():
    """main() routes SIGINT and SIGTERM through search.signals; pytest's own handlers come back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


# -- train --save ----------------------------------------------------------------------------

def test_train_save_never_replaces_a_file_it_did_not_write(synth_dir, tmp_path, capsys):
    folder = tmp_path / "run"
    args = ["train", "--preset", "seed000-cnn2pooling2fully1-d", "--data-dir", str(synth_dir), "--val-size", "100",
            "--epochs", "1", "--quiet", "--save", str(folder)]
    folder.mkdir()
    for name in commands.SAVED:
        mine = folder / name
        mine.write_text("the user's own")
        assert main(args) == 2
        assert f"holds {name}, which train did not write" in _one_error(capsys)
        assert mine.read_text() == "the user's own"
        mine.unlink()
    (folder / "notes.txt").write_text("beside it")
    assert main(args) == 0 and (folder / "weights.pt").is_file()
    capsys.readouterr()
    assert main(args) == 0  # its own earlier files: replaced
    capsys.readouterr()
    assert (folder / "notes.txt").read_text() == "beside it"
    (folder / "spec.json").write_text("edited by hand")  # ours once, the user's now
    assert main(args) == 2 and "which train did not write (or which changed since)" in _one_error(capsys)
    assert (folder / "spec.json").read_text() == "edited by hand"
    # A refused command creates no folder
    assert main([*args[:-1], str(tmp_path / "new" / "run"), "--preset", "nope"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()


# -- another tool's study or database ----------------------------------------------------------

def test_a_study_like_ours_made_by_another_tool_is_not_adopted(synth_dir, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    study.set_metric_names(["acc", "params"])
    study.set_user_attr("objectives", {"acc": "mine"})  # even our attribute names
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 10.0), n_trials=2)
    before = _digest(tmp_path / "other.db")
    assert small_search(synth_dir, url, "--trials", "2") == 2
    assert "fmnist-search did not create it" in _one_error(capsys)
    assert _digest(tmp_path / "other.db") == before
    # ours is recognised by the marker written at creation
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds", study="ours") == 0
    ours = optuna.load_study(study_name="ours", storage=url)
    assert record.is_our_study(ours) and record.CREATED_BY in optuna_api.study_system_attrs(ours)


def test_a_study_of_the_release_before_the_marker_is_still_ours(synth_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds") == 0
    with sqlite3.connect(tmp_path / "old.db") as con:  # as an earlier release left it: no marker
        con.execute("DELETE FROM study_system_attributes WHERE key = ?", (record.CREATED_BY,))
    assert not record.CREATED_BY in optuna_api.study_system_attrs(optuna.load_study(study_name="s", storage=url))
    assert small_search(synth_dir, url, "--trials", "2", "--no-enqueue-seeds") == 0
    assert record.CREATED_BY in optuna_api.study_system_attrs(optuna.load_study(study_name="s", storage=url))


def _application_db(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO customers (name) VALUES ('Ada')")


def test_an_applications_database_gets_no_tables(synth_dir, tmp_path, capsys):
    db = tmp_path / "app.db"
    _application_db(db)
    before = _digest(db)
    url = f"sqlite:///{db}"
    for argv in (["show", "--storage", url], ["export-best", "--storage", url, "--data-dir", str(synth_dir),
                                               "--out", str(tmp_path / "out")],
                 ["dashboard", "--storage", url, "--port", "0"]):
        assert main(argv) == 2
        assert "holds no Optuna studies" in _one_error(capsys)
    assert small_search(synth_dir, url, "--trials", "1") == 2
    assert "tables that are not Optuna's (customers)" in _one_error(capsys)
    assert _digest(db) == before and not (tmp_path / "out").exists() and not (tmp_path / "app-artifacts").exists()


# -- the study contract ------------------------------------------------------------------------

def test_a_rerun_takes_its_contract_from_the_study(synth_dir, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds", "--train-subset", "300") == 0
    capsys.readouterr()
    # The rerun gives neither --train-subset nor --seed: it takes the study's, and says so.
    argv = ["--data-dir", str(synth_dir), "--storage", url, "--study", "s", "--epochs", "1", "--max-flops", "3000000",
            "--quiet", "--no-warm-start", "--trials", "3", "--no-enqueue-seeds"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "continuing study 's' with its own split and budget: --seed 1, --val-size 100, --train-subset 300" in out
    study = optuna.load_study(study_name="s", storage=url)
    trained = [t for t in study.trials if record.was_trained(t)]
    assert len(trained) >= 3 and {t.user_attrs[record.IMAGES_SEEN] <= 300 for t in trained} == {True}
    for flag, value, said in (("--train-subset", "400", "created with --train-subset 300"),
                              ("--space", "blocks", "created with --space stages"),
                              ("--val-size", "50", "created with --val-size 100")):
        assert main([*argv, flag, value]) == 2
        assert said in _one_error(capsys)


def test_a_rerun_of_a_blocks_study_keeps_its_space(synth_dir, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds", "--space", "blocks") == 0
    assert small_search(synth_dir, url, "--trials", "2", "--no-enqueue-seeds") == 0
    assert "--space blocks" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=url)
    assert all("n_convs" in t.params for t in study.trials if record.was_trained(t))


def test_a_refused_command_leaves_no_database_study_or_folder(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///s.db"
    data = ["--data-dir", str(synth_dir)]
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    cases = [(["--val-size", "599"], "leaves 1 training image"),
             (["--artifact-dir", str(blocker)], "is a file, not a folder"),
             (["--artifact-dir", str(blocker / "below")], "is a file, not a folder"),
             (["--val-size", "100", "--train-subset", "1"], "at least 2")]
    for extra, said in cases:
        assert main(["--storage", url, *data, "--epochs", "1", "--quiet", *extra]) == 2, extra
        assert said in _one_error(capsys)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], extra
    # the default storage and data folder: "data not found" leaves neither studies/ nor data/
    assert main(["--epochs", "1", "--quiet"]) == 2
    assert "Fashion-MNIST not found" in _one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    # and the corrected command then works
    assert main(["--storage", url, *data, "--val-size", "100", "--epochs", "1", "--quiet", "--trials", "1",
                 "--no-enqueue-seeds", "--no-warm-start", "--max-flops", "3000000"]) == 0


# -- SIGTERM -----------------------------------------------------------------------------------

def test_sigterm_in_training_stops_like_ctrl_c(synth_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    proc = cli("--data-dir", str(synth_dir), "--storage", url, "--study", "t", "--epochs", "200", "--val-size", "100",
               "--trials", "5", "--no-enqueue-seeds", "--no-warm-start", "--max-flops", "3000000", "--quiet")
    found = trial_in_training(url, proc, 3_000_000)
    assert found, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM): finished trials are kept" in out
    study = optuna.load_study(study_name="t", storage=url)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    failed = study.trials[found[1]]
    assert failed.state == TrialState.FAIL
    assert [t for t in study.trials if t.state == TrialState.WAITING and t.params == failed.params]


def test_a_signal_as_a_trial_is_created_leaves_nothing_running(synth_dir, tmp_path, monkeypatch, restore_signals):
    """The window between Optuna creating a trial and the worker recording itself on it."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    real, created = optuna.storages.RDBStorage._create_new_trial, []

    def then_sigterm(self, study_id, template_trial=None):
        trial = real(self, study_id, template_trial)
        created.append(trial.number)
        if len(created) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread at once
        return trial

    monkeypatch.setattr(optuna.storages.RDBStorage, "_create_new_trial", then_sigterm)
    assert small_search(synth_dir, url, "--trials", "4", "--no-enqueue-seeds") == 143
    study = optuna.load_study(study_name="s", storage=url)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert study.trials[created[1]].state == TrialState.FAIL


def test_sigterm_during_an_export_leaves_nothing_partial(synth_dir, tmp_path, monkeypatch, restore_signals, capsys):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds") == 0
    real = export.write_model_files

    def sigterm_midway(*args, **kwargs):
        result = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(export, "write_model_files", sigterm_midway)
    out = tmp_path / "exports" / "mine"
    assert main(["export-best", "--storage", url, "--study", "s", "--data-dir", str(synth_dir), "--out", str(out)]) == 143
    assert "terminated" in capsys.readouterr().err
    assert list((tmp_path / "exports").iterdir()) == []


# -- hostile or corrupt files ------------------------------------------------------------------

def test_hostile_files_are_one_line_with_bounded_memory(synth_dir, tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 200_000 + "]" * 200_000)
    huge_spec = tmp_path / "huge.json"
    huge_spec.write_text(ModelSpec(ArchSpec(convs=tuple(ConvBlock(4096) for _ in range(40)))).to_json())
    bomb_dir = tmp_path / "bomb"
    write_dataset(bomb_dir, n_train=100, n_test=20)
    (bomb_dir / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * (600 * 2**20)))  # 600 MB in 600 kB
    model = tmp_path / "model"
    assert main(["train", "--preset", "seed000-cnn2pooling2fully1-d", "--data-dir", str(synth_dir), "--val-size", "100",
                 "--epochs", "1", "--quiet", "--save", str(model)]) == 0
    bigweights = tmp_path / "bigweights"
    bigweights.mkdir()
    (bigweights / "spec.json").write_text((model / "spec.json").read_text())
    (bigweights / "weights.pt").write_bytes(b"\0" * (60 * 2**20))
    canvas = tmp_path / "canvas.png"
    from PIL import Image
    Image.new("L", (12_000, 12_000)).save(canvas)  # 144 megapixels in a few hundred kB
    cases = [(["train", "--spec", str(nested), "--data-dir", str(synth_dir)], "nested too deeply"),
             (["predict", "--model", str(tmp_path / "m2"), str(canvas)], "no spec.json"),
             (["train", "--preset", "seed003", "--data-dir", str(bomb_dir), "--quiet"], "decompresses to more than"),
             (["predict", "--model", str(bigweights), str(canvas)], "more than the weights of its model can take"),
             (["predict", "--model", str(model), str(canvas)], "megapixels are read")]
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "weights.pt").write_bytes(b"")
    (tmp_path / "m3").mkdir()
    (tmp_path / "m3" / "spec.json").write_text(huge_spec.read_text())
    (tmp_path / "m3" / "weights.pt").write_bytes(b"")
    cases.append((["predict", "--model", str(tmp_path / "m3"), str(canvas)], "too large to run here"))
    # VmHWM: this process's peak resident memory (ru_maxrss would carry over the forking parent's)
    code = ("import re, sys; from search.cli import main; rc = main(sys.argv[1:]); "
            "print('maxrss_kb', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1), "
            "file=sys.stderr); sys.exit(rc)")
    import subprocess
    for argv, said in cases:
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
        lines = [l for l in proc.stderr.splitlines() if l.startswith("fmnist-search")]
        assert proc.returncode == 2 and len(lines) == 1 and said in lines[0], (argv, proc.stderr)
        rss = int(proc.stderr.rsplit("maxrss_kb", 1)[1].split()[0]) * 1024
        assert rss < 1.5 * 2**30, (argv, rss)  # the interpreter with torch is about 0.5 GiB of it
        assert "Traceback" not in proc.stderr


def test_an_export_marker_made_hostile_is_one_line(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / target.MARKER).write_text("[" * 100_000)
    (out / "report.html").write_text("x")
    with pytest.raises(fmnist.UsageError, match="is unreadable"):
        target.check_target(out)


# -- also ----------------------------------------------------------------------------------------

def test_threads_above_the_cores_warn_and_workers_beyond_memory_are_refused(synth_dir, tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setattr(workers, "WORKER_BYTES", 2**50)
    assert small_search(synth_dir, url, "--workers", "2") == 2
    assert "--workers 2: each worker process needs about" in _one_error(capsys)
    assert not (tmp_path / "x.db").exists()
    monkeypatch.undo()
    import torch
    threads = torch.get_num_threads()
    try:
        assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds", "--threads",
                            str((os.cpu_count() or 1) + 1)) == 0
    finally:
        torch.set_num_threads(threads)  # process-wide: the other tests keep theirs
    assert f"more than this machine's {os.cpu_count()} cores" in capsys.readouterr().err


def test_reports_escape_html_and_errors_name_the_actual_cause(synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "<script>alert(1)</script>"
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds", study=name) == 0
    study = optuna.load_study(study_name=name, storage=url)
    (done,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # the same trial as an attacker or a buggy tool would leave it: a preset name that is a path
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, params=done.params, distributions=done.distributions, values=done.values,
        user_attrs={**done.user_attrs, record.PRESET: "../../../evil"}, system_attrs=done.system_attrs))
    number = len(study.trials) - 1
    out = tmp_path / "out"
    assert main(["export-best", "--storage", url, "--study", name, "--data-dir", str(synth_dir), "--out", str(out),
                 "--trial", str(number), "--trial", str(number)]) == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "<script>" not in report and "&lt;script&gt;" in report
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"trial-{number}"]
    assert not list(tmp_path.rglob("evil*"))


def test_export_leaves_no_onnxruntime_telemetry_in_home(synth_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    assert small_search(synth_dir, url, "--trials", "1", "--no-enqueue-seeds") == 0
    home = tmp_path / "home"
    home.mkdir()
    proc = cli("export-best", "--storage", url, "--study", "s", "--data-dir", str(synth_dir), "--out",
               str(tmp_path / "out"), env={"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not (home / ".cache" / "Microsoft").exists()  # onnxruntime's device id and event database
