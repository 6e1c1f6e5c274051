"""The final training's runs side by side (export-best --retrain --parallel): the minutes they are
planned in, the ETA, and what a user sees when one of them, or the command, is stopped."""
from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from fmnist.errors import UsageError
from search.handover import final, runs
from search.loop import workers
from search.testing.support import cli, load_study


def test_runs_start_as_processes_free_up():
    assert final.makespan([5, 3, 3, 1], 1) == 12
    assert final.makespan([5, 3, 3, 1], 2) == 6   # 5 | 3 3, then the 1 after the 5
    assert final.makespan([5, 3, 3, 1], 8) == 5
    assert final.makespan([], 2) == 0


def test_several_processes_start_the_longest_runs_first():
    p = final.Plan(epochs={1: 1, 2: 10}, seeds=(0, 1), rates={1: 100.0, 2: 100.0}, train_images=100, processes=2)
    assert p.runs() == [(2, 0), (2, 1), (1, 0), (1, 1)] and p.seconds() == 11
    one = final.Plan(epochs={1: 1, 2: 10}, seeds=(0, 1), rates={1: 100.0, 2: 100.0}, train_images=100)
    assert one.runs() == [(1, 0), (1, 1), (2, 0), (2, 1)] and one.seconds() == 22  # model by model, seed by seed


@pytest.mark.parametrize("seeds,processes", [(1, 2), (2, 2), (1, 3), (3, 2)])
def test_the_split_by_hypervolume_is_the_best_that_fits_the_processes(seeds, processes):
    """Against every split whose runs end within the minutes on the processes, longest first."""
    cost, width = {1: 1.0, 2: 4.0, 3: 9.0}, {1: 0.3, 2: 0.2, 3: 1.5}

    def value(e: dict[int, int]) -> float:
        return -sum(width[k] / e[k] for k in e)
    for seconds in (30, 90):
        got = final.split_by_hypervolume(cost, width, seconds, seeds, processes)
        assert final.fits(got, cost, seconds, seeds, processes) and all(got[k] >= 1 for k in got)
        best = max(value(e) for e in (dict(zip(cost, c)) for c in itertools.product(range(1, 91), range(1, 23),
                                                                                     range(1, 11)))
                   if final.fits(e, cost, seconds, seeds, processes))
        assert value(got) >= best - 1e-9
    # side by side, the same minutes hold more epochs than one at a time
    one, side = (final.split_by_hypervolume(cost, width, 200, seeds, n) for n in (1, processes))
    assert sum(side.values()) > sum(one.values())


def test_the_equal_split_is_the_most_epochs_that_fit():
    cost = {1: 1.0, 2: 4.0}
    assert final.split_equally(cost, 50) == {1: 10, 2: 10}
    assert final.split_equally(cost, 50, processes=2) == {1: 12, 2: 12}  # 4 x 12 = 48 on one, 12 on the other
    assert final.split_equally(cost, 50, seeds=2, processes=2) == {1: 10, 2: 10}
    assert final.split_equally(cost, 1) == {1: 1, 2: 1}  # at least one each


def test_the_eta_with_runs_side_by_side_follows_what_is_left_of_each_run(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(final.time, "monotonic", lambda: now[0])
    # two runs of 100 s and two of 10 s on 2 processes: 100 | 100, then 10 10: 110 s
    p = final.Plan(epochs={1: 1, 2: 10}, seeds=(0, 1), rates={1: 10.0, 2: 10.0}, train_images=100, processes=2)
    clock = final.Clock(p, started=0.0)
    assert clock.left() == pytest.approx(110)
    now[0] = 100.0  # both long runs done at half the planned pace ...
    clock.advance((2, 0), 50)
    clock.advance((2, 1), 50)
    assert clock.left() == pytest.approx(2 * 60)  # ... 50 | 50, then 10 | 10, at that pace
    now[0] = 210.0
    for run, done in (((2, 0), 100), ((2, 1), 100), ((1, 0), 10), ((1, 1), 5)):
        clock.advance(run, done)
    # one run left, half done: at the pace a process kept (215 planned s in 2 x 210 process-s),
    # not the pace of the one process still busy
    assert clock.left() == pytest.approx(5 * 2 * 210 / 215)


def test_how_many_runs_go_side_by_side(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(workers, "available_memory", lambda device: 64 * 2**30)
    cpu = torch.device("cpu")
    assert runs.share(cpu, None, 10) == (4, 1)
    assert runs.share(cpu, None, 3) == (3, 1)     # no more processes than runs
    assert runs.share(cpu, None, 1) == (1, None)  # one run: in this process, on all threads
    assert runs.share(cpu, 2, 10) == (2, 2)
    assert runs.share(cpu, 1, 10) == (1, None)
    monkeypatch.setattr(workers, "available_memory", lambda device: 3 * 2**30)
    assert runs.share(cpu, None, 10) == (2, 2)    # as many as memory holds
    with pytest.raises(UsageError, match="at most 2 fit"):
        runs.share(cpu, 4, 10)
    with pytest.raises(UsageError, match="on a GPU the runs train one at a time"):
        runs.share(torch.device("cuda"), 2, 10)
    assert runs.share(torch.device("cuda"), None, 10) == (1, None)


def _children(pid: int) -> list[int]:
    """The training processes a process started (multiprocessing's spawned children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _a_trial(small_study: Path) -> int:
    return next(t.number for t in load_study(small_study).trials if t.state == TrialState.COMPLETE)


def _export_in_training(small_study: Path, synth_dir: Path, out: Path):
    """export-best with two runs side by side, returned once both are training."""
    proc = cli("export-best", "--storage", f"sqlite:///{small_study}", "--study", "s", "--data-dir", str(synth_dir),
               "--out", str(out), "--trial", str(_a_trial(small_study)), "--retrain", "--epochs", "300",
               "--seeds", "2", "--parallel", "2")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "seed 1 (2/2): epoch" in line:
            break
    kids = _children(proc.pid)
    assert len(kids) == 2, (kids, seen, proc.poll())
    return proc, kids


def _gone(pids: list[int], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def test_a_run_killed_mid_training_stops_the_export_with_one_line(small_study, synth_dir, tmp_path):
    out = tmp_path / "out"
    proc, kids = _export_in_training(small_study, synth_dir, out)
    os.kill(kids[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    line = err.strip().splitlines()[-1]
    assert f"fmnist-search: error: the final training's run of trial {_a_trial(small_study)}" in line and "was killed by signal 9" in line
    assert "Traceback" not in err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left either
    assert _gone(kids)


@pytest.mark.parametrize("how,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_export_ends_its_runs(small_study, synth_dir, tmp_path, how, status):
    proc, kids = _export_in_training(small_study, synth_dir, tmp_path / "out")
    os.kill(proc.pid, how)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and "Traceback" not in err, err
    assert _gone(kids) and list(tmp_path.iterdir()) == []


def test_runs_whose_export_was_killed_stop_at_their_next_report(small_study, synth_dir, tmp_path):
    proc, kids = _export_in_training(small_study, synth_dir, tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _gone(kids)


def test_runs_side_by_side_report_each_seed_and_the_processes(small_study, synth_dir, tmp_path):
    proc = cli("export-best", "--storage", f"sqlite:///{small_study}", "--study", "s", "--data-dir", str(synth_dir),
               "--out", str(tmp_path / "out"), "--trial", str(_a_trial(small_study)), "--retrain", "--epochs", "2",
               "--seeds", "3",
               "--parallel", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "3 run(s) of 2 epoch(s) on all 600 training images, 2 side by side" in out
    assert "measuring each model's training speed in 2 processes side by side, 1 thread(s) each" in out
    final_figures = json.loads((tmp_path / "out" / f"trial-{_a_trial(small_study)}" / "metrics.json").read_text())["final"]
    assert final_figures["seeds"] == [0, 1, 2] and len(final_figures["test_acc"]) == 3
    assert final_figures["side_by_side"] == 2 and final_figures["std"] is not None


def test_more_runs_side_by_side_than_memory_holds_are_refused_before_any_work(small_study, synth_dir, tmp_path,
                                                                               capsys):
    from search.cli import main
    assert main(["export-best", "--storage", f"sqlite:///{small_study}", "--study", "s", "--data-dir", str(synth_dir),
                 "--out", str(tmp_path / "out"), "--retrain", "--epochs", "1", "--parallel", "100000"]) == 2
    out, err = capsys.readouterr()
    assert err.strip().startswith("fmnist-search: error: --parallel 100000: each run's process needs about")
    assert "exporting" not in out and list(tmp_path.iterdir()) == []
