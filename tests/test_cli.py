"""`fmnist-search train` and `presets` through main(), as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys

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
