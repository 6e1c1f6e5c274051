"""`fmnist-search train` and `presets` through main(), as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search.cli import main
from space import ModelSpec, build, zoo


def test_presets_lists_the_zoo_with_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for p in zoo.PRESETS:
        assert p.name in out and f"{p.params:,}" in out
    assert "484,172" in out and "94.25%" in out and "exact" in out


def test_train_a_preset_prints_params_accuracies_and_the_seed_figure(synth_dir, tmp_path, capsys):
    code = main(["train", "--preset", "seed000-cnn2pooling2fully1-d", "--data-dir", str(synth_dir),
                 "--val-size", "100", "--epochs", "2", "--batch-size", "50", "--quiet",
                 "--save", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "45,002" in captured.out and "validation acc" in captured.out and "test acc" in captured.out
    assert "seed 000 reported" in captured.out and "87.26%" in captured.out
    assert "epoch 2:" in captured.out
    assert "not the official" in captured.err  # the synthetic files are announced
    spec = ModelSpec.from_json((tmp_path / "run" / "spec.json").read_text())
    assert spec.train.epochs == 2 and spec.arch == zoo.get("seed000-cnn2pooling2fully1-d").arch
    model = build(spec.arch)
    model.load_state_dict(torch.load(tmp_path / "run" / "weights.pt", weights_only=True))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["params"] == 45_002 and len(metrics["curve"]) == 2


def test_train_a_spec_file(synth_dir, tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"arch": {"convs": [{"filters": 4, "pool": "max"}], "head": "gap"},
                                "train": {"epochs": 1, "batch_size": 100}}))
    assert main(["train", "--spec", str(path), "--data-dir", str(synth_dir), "--val-size", "100",
                 "--quiet"]) == 0
    assert "90 params" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:"), err
    return err[0]


def test_bad_spec_file_and_options_are_one_line_exit_2(synth_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arch": {"convs": [{"filters": 0}]}}))
    data = ["--data-dir", str(synth_dir), "--quiet"]
    cases = [
        (["train", "--spec", str(bad)], "convs[0].filters"),
        (["train", "--spec", str(tmp_path / "absent.json")], "cannot read"),
        (["train", "--preset", "seed003", "--epochs", "0"], "--epochs"),
        (["train", "--preset", "seed003", "--epochs", "ten"], "--epochs"),
        (["train", "--preset", "seed003", "--device", "tpu"], "--device"),
        (["train", "--preset", "seed003", "--lr", "-1"], "lr: must be > 0"),
        (["train"], "--preset"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for argv, expected in cases:
        args = argv + data if argv[0] == "train" and argv != ["train"] else argv
        assert main(args) == 2, argv
        assert expected in _one_error_line(capsys), argv


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "search.cli", "train", "--preset", "seed003",
                           "--data-dir", str(tmp_path), "--no-download"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Fashion-MNIST not found" in proc.stderr


def _foreign_study(db):
    """A study another tool made, with the same objectives and none of our attributes."""
    import optuna
    study = optuna.create_study(study_name="other", storage=f"sqlite:///{db}", directions=["maximize", "minimize"])
    study.set_metric_names(["acc", "params"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1000.0), n_trials=3)


def test_faults_a_user_can_meet_are_one_line_and_lose_nothing(synth_dir, tmp_path, capsys):
    from PIL import Image
    import numpy as np
    spec5 = tmp_path / "five.json"
    spec5.write_text(json.dumps({"arch": {"convs": [{"filters": 4, "pool": "max"}], "num_classes": 5}}))
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    bomb = tmp_path / "huge.png"
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(bomb)
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    foreign = tmp_path / "foreign.db"
    _foreign_study(foreign)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database, whatever its name says" * 100)
    data = ["--data-dir", str(synth_dir)]
    store = ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--quiet"]
    model = tmp_path / "model"
    assert main(["train", "--preset", "seed000-cnn2pooling2fully1-d", *data, "--val-size", "100", "--epochs", "1",
                 "--quiet", "--save", str(model)]) == 0
    capsys.readouterr()
    cases = [
        (["search", *store, "--seed", "-1", *data], "--seed: must be at least 0"),
        (["search", *store, "--seed", str(2**70), *data], "--seed: must be at most 4294967295"),
        (["train", "--preset", "seed003", "--seed", "-1", *data], "--seed: must be at least 0"),
        (["search", "--storage", "sqlite://", *data], "in-memory SQLite"),
        (["search", "--storage", "sqlite:///:memory:", *data], "in-memory SQLite"),
        (["search", *store, "--study", "", *data], "the name is empty"),
        (["search", *store, "--study", "x" * 10_000, *data], "10,000 characters"),
        (["search", *store, "--val-size", "0", *data], "--val-size 0"),
        (["search", *store, "--max-params", "1", *data], "no candidate fits; the stages space's smallest model has 170"),
        (["train", "--spec", str(spec5), *data, "--quiet"], "num_classes is 5"),
        (["train", "--spec", str(binary), *data, "--quiet"], "not a text file"),
        (["train", "--preset", "seed003", *data, "--val-size", "100", "--train-subset", "1", "--quiet"],
         "at least 2"),
        (["train", "--preset", "seed003", *data, "--save", str(blocker / "run"), "--quiet"], "--save"),
        (["show", "--storage", f"sqlite:///{tmp_path / 'typo.db'}"], "no database at"),
        (["show", "--storage", f"sqlite:///{corrupt}"], "file is not a database"),
        (["search", "--storage", f"sqlite:///{corrupt}", *data, "--val-size", "100", "--quiet"],
         "file is not a database"),
        (["train", "--preset", "seed003", *data, "--val-size", "599", "--quiet"], "at least 2"),
        (["export-best", "--storage", f"sqlite:///{foreign}", "--study", "other", "--out", str(tmp_path / "o"), *data],
         "no finished trials of fmnist-search"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
        assert len(err) == 1 and err[0].startswith("fmnist-search: error:") and expected in err[0], (argv, err)
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "s.db").exists()
    assert blocker.read_text() == "mine"
    from PIL import Image as PILImage
    limit = PILImage.MAX_IMAGE_PIXELS
    try:
        PILImage.MAX_IMAGE_PIXELS = 100  # a 200x200 image is then over twice the limit: a "bomb"
        assert main(["predict", "--model", str(model), str(bomb)]) == 2
        assert "too large to read safely" in _one_error_line(capsys)
    finally:
        PILImage.MAX_IMAGE_PIXELS = limit
    assert main(["show", "--storage", f"sqlite:///{foreign}", "--study", "other"]) == 0
    assert "not trained by fmnist-search" in capsys.readouterr().out
    # A search is refused: another tool's study is not adopted, and nothing is written to it.
    import optuna
    before = optuna.load_study(study_name="other", storage=f"sqlite:///{foreign}")
    attrs = (before.user_attrs, before._storage.get_study_system_attrs(before._study_id), len(before.trials))
    assert main(["search", "--storage", f"sqlite:///{foreign}", "--study", "other", *data, "--val-size", "100",
                 "--epochs", "1", "--trials", "4", "--quiet", "--no-enqueue-seeds", "--no-warm-start",
                 "--max-flops", "3000000"]) == 2
    assert "fmnist-search did not create it" in _one_error_line(capsys)
    after = optuna.load_study(study_name="other", storage=f"sqlite:///{foreign}")
    assert (after.user_attrs, after._storage.get_study_system_attrs(after._study_id), len(after.trials)) == attrs


def test_a_model_too_large_for_memory_is_refused_from_its_spec_before_allocating(synth_dir, tmp_path, capsys):
    from space import ArchSpec, ConvBlock, DenseLayer, training_bytes
    huge = ArchSpec(convs=(ConvBlock(4096), ConvBlock(4096)), dense=(DenseLayer(65536),))  # ~842 GB of weights
    assert training_bytes(huge, 256) > 2**40  # 210G parameters x 16 bytes: over 3 TB
    small = zoo.get("seed003")
    assert 100 * 2**20 < training_bytes(small.arch, small.train.batch_size) < 4 * 2**30
    path = tmp_path / "huge.json"
    path.write_text(ModelSpec(huge).to_json())
    assert main(["train", "--spec", str(path), "--data-dir", str(synth_dir), "--val-size", "100", "--quiet"]) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
    assert len(err) == 1 and "too large to train here: needs about" in err[0] and "GiB free" in err[0]
    from search.loop.trial import too_big
    assert too_big(huge, 256, torch.device("cpu")).startswith("needs about")  # the search skips it, free
    assert too_big(small.arch, 256, torch.device("cpu")) is None


# Reads a study as `fmnist-search show` does, then says whether torch was imported on the way.
SHOW_AND_TELL = ("import sys; from search.cli import main; code = main(sys.argv[1:]); "
                 "print('torch' in sys.modules); sys.exit(code)")


def test_show_presets_and_the_dashboard_start_without_torch(small_study):
    """Reading a study or the zoo needs no torch, whose import alone takes seconds: `show` and
    `presets` answer at once and the dashboard serves without it."""
    from search.testing.support import cli, request
    store = ["--storage", f"sqlite:///{small_study}", "--study", "s"]
    proc = subprocess.run([sys.executable, "-c", SHOW_AND_TELL, "show", *store], capture_output=True, text=True)
    assert proc.returncode == 0 and "3 complete" in proc.stdout, proc.stderr
    assert proc.stdout.rstrip().endswith("False"), proc.stdout
    proc = subprocess.run([sys.executable, "-c", SHOW_AND_TELL, "presets"], capture_output=True, text=True)
    assert proc.returncode == 0 and "seed003" in proc.stdout and proc.stdout.rstrip().endswith("False"), proc.stderr
    server = cli("dashboard", *store, "--port", "0")
    try:
        first = server.stdout.readline()
        port = int(first.split("/dashboard")[0].rsplit(":", 1)[1])
        status, body = request(f"http://127.0.0.1:{port}/api/studies")
        assert status == 200 and b'"s"' in body, body
        maps = Path(f"/proc/{server.pid}/maps").read_text()  # what the server process has loaded, as it serves
        assert "libtorch" not in maps
    finally:
        server.terminate()
        server.wait(timeout=30)


STORE = ["--storage", "sqlite:///{db}", "--study", "s"]
REFUSED_BEFORE_TORCH = {
    "no such study": (["export-best", "--storage", "sqlite:///{db}", "--study", "nope"], "--study 'nope': no such study"),
    "no such trial": (["export-best", *STORE, "--trial", "99"], "--trial 99: no such trial"),
    "a folder of the user's": (["export-best", *STORE, "--out", "{tmp}/mine"], "was not written by export-best"),
    "clashing options": (["export-best", *STORE, "--seeds", "2"], "--seeds: belongs to the final training"),
    "unknown preset": (["train", "--preset", "nope", "--threads", "1"], "unknown preset 'nope'"),
    "missing spec": (["train", "--spec", "{tmp}/none.json"], "none.json"),
    "acc without validation": (["search", *STORE, "--val-size", "0", "--threads", "1"], "--val-size 0"),
}


@pytest.mark.parametrize("case", REFUSED_BEFORE_TORCH, ids=list(REFUSED_BEFORE_TORCH))
def test_a_refused_command_answers_before_torch_loads(small_study, tmp_path, case):
    """export-best, train and the search check what they were given before torch's import, which
    takes seconds: a refusal is one line at once, and nothing is written."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    argv, said = REFUSED_BEFORE_TORCH[case]
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{db}", str(small_study)) for a in argv]
    before = sorted(tmp_path.rglob("*")), small_study.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-c", SHOW_AND_TELL, *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.rstrip().endswith("False"), proc.stdout
    assert (sorted(tmp_path.rglob("*")), small_study.stat().st_mtime_ns) == before
