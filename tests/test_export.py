"""export-best and predict on a small synthetic study: real files, loaded back and checked."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import onnxruntime
import optuna
import pytest
import torch
from PIL import Image

from fmnist import CLASSES, idx
from fmnist.augment import to_input
from search.study import record
from search.cli import main
from space import ModelSpec, build, param_count
from search.testing.synthetic import make_images

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study_db(synth_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("exp") / "e.db"
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", "e", "--quiet",
                 "--val-size", "100", "--epochs", "2", "--max-flops", "3000000", "--trials", "3",
                 "--no-enqueue-seeds", "--pruner", "none", "--seed", "3"]) == 0
    return db


def export(db, synth_dir, out, *extra):
    return main(["export-best", "--storage", f"sqlite:///{db}", "--study", "e", "--data-dir", str(synth_dir),
                 "--out", str(out), *extra])


@pytest.fixture(scope="module")
def exported(study_db, synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "front"
    assert export(study_db, synth_dir, out) == 0
    return out


def _front(db):
    return optuna.load_study(study_name="e", storage=f"sqlite:///{db}").best_trials


def test_weights_are_kept_as_artifacts_beside_the_database(study_db):
    store = study_db.with_name("e-artifacts")
    for t in _front(study_db):
        assert (store / t.user_attrs["weights_artifact"]).is_file()


def test_optuna_dashboard_serves_the_weights_artifacts(study_db):
    import urllib.request

    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore
    from wsgi_server import serving
    store_dir = study_db.with_name("e-artifacts")
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{study_db}")
    t = study.best_trials[0]
    app = optuna_dashboard.wsgi(f"sqlite:///{study_db}", artifact_store=FileSystemArtifactStore(str(store_dir)))
    with serving(app) as base:
        url = f"{base}/artifacts/{study._study_id}/{t._trial_id}/{t.user_attrs['weights_artifact']}"
        body = urllib.request.urlopen(url, timeout=30).read()
    assert body == (store_dir / t.user_attrs["weights_artifact"]).read_bytes()


def test_every_front_model_is_exported_with_checked_files(exported, study_db, synth_dir):
    front = _front(study_db)
    folders = sorted(p.name for p in exported.iterdir() if p.is_dir())
    assert folders == sorted(f"trial-{t.number}" for t in front)
    test_images = idx.parse(synth_dir / "t10k-images-idx3-ubyte.gz",
                            idx.decompress(synth_dir / "t10k-images-idx3-ubyte.gz",
                                           idx.read_raw(synth_dir / "t10k-images-idx3-ubyte.gz")), idx.IMAGES_MAGIC)
    x = to_input(torch.from_numpy(test_images[:16].copy()))
    for t in front:
        folder = exported / f"trial-{t.number}"
        spec = ModelSpec.from_json((folder / "spec.json").read_text())
        assert spec == ModelSpec.from_json(record.spec_text(t))
        model = build(spec.arch).eval()
        model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        with torch.no_grad():
            expected = model(x)
        scripted = torch.jit.load(str(folder / "model.ts"))
        assert torch.allclose(scripted(x), expected, atol=1e-4)
        program = torch.export.load(folder / "model.pt2").module()  # another batch size than at export
        assert torch.allclose(program(x), expected, atol=1e-4)
        session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected.numpy(), atol=1e-4)
        assert not (folder / "model.onnx.data").exists()  # one self-contained ONNX file
        m = json.loads((folder / "metrics.json").read_text())
        assert m["params"] == param_count(spec.arch) == t.user_attrs["params"] and m["flops"] > 0
        assert m["tta"] == spec.arch.tta
        assert m["val_acc"] == t.user_attrs["val_acc"] and m["test_top5"] >= m["test_acc"]
        assert m["test_acc"] == pytest.approx(t.user_attrs["test_acc"], abs=0.011)  # bf16 vs bf16, same weights
        assert set(m["per_class"]) == set(CLASSES)
        assert all(0 <= v["precision"] <= 1 and 0 <= v["recall"] <= 1 for v in m["per_class"].values())
        cm = np.array(m["confusion_matrix"])
        assert cm.shape == (10, 10) and cm.sum() == 200
        assert max(m["onnx_max_abs_diff"], m["torchscript_max_abs_diff"], m["pt2_max_abs_diff"]) <= 1e-3


def test_report_has_valid_pictures_in_both_formats(exported, study_db):
    md, page = (exported / "report.md").read_text(), (exported / "report.html").read_text()
    pictures = ["front.png", "curves.png"] + [f"trial-{t.number}/confusion.png" for t in _front(study_db)]
    for pic in pictures:
        data = (exported / pic).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(exported / pic) as im:
            im.verify()
        assert f"]({pic})" in md and f'src="{pic}"' in page
    assert "seed models dominated" in md and "precision" in md and page.startswith("<!DOCTYPE html>")
    assert "Budget: every trial that was not stopped early trained on 500 images for 2 epochs (the top rung; cpu profile)" in md
    seeds = md.split("## Seed models", 1)[1]
    assert "| 4:lenet5 | seed004-lenet5 | LeNet-5 | 136,586 | 92.11% | validation (10k) |" in seeds
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_choose_by_trial_top_and_max_params(study_db, synth_dir, tmp_path):
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{study_db}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    smallest = min(done, key=lambda t: t.user_attrs["params"])
    assert export(study_db, synth_dir, tmp_path / "a", "--trial", str(smallest.number)) == 0
    assert [p.name for p in (tmp_path / "a").iterdir() if p.is_dir()] == [f"trial-{smallest.number}"]
    assert export(study_db, synth_dir, tmp_path / "b", "--top", "1", "--by", "params") == 0
    assert (tmp_path / "b" / f"trial-{smallest.number}").is_dir()
    assert export(study_db, synth_dir, tmp_path / "c", "--max-params", str(smallest.user_attrs["params"])) == 0
    assert all(json.loads((p / "metrics.json").read_text())["params"] <= smallest.user_attrs["params"]
               for p in (tmp_path / "c").iterdir() if p.is_dir())


def test_the_final_training_runs_each_seed_and_reports_the_spread(study_db, synth_dir, tmp_path, capsys):
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{study_db}")
    best = max(study.best_trials, key=lambda t: t.user_attrs["val_acc"])
    assert export(study_db, synth_dir, tmp_path / "r", "--trial", str(best.number), "--retrain",
                  "--epochs", "1", "--seeds", "2", "--seed", "5") == 0
    m = json.loads((tmp_path / "r" / f"trial-{best.number}" / "metrics.json").read_text())
    final = m["final"]
    assert final["epochs"] == 1 and final["seeds"] == [5, 6] and final["exported_seed"] == 5
    assert len(final["test_acc"]) == 2 and final["mean"] == pytest.approx(sum(final["test_acc"]) / 2)
    assert final["std"] == pytest.approx(abs(final["test_acc"][0] - final["test_acc"][1]) / 2 ** 0.5)
    assert m["test_acc"] == final["test_acc"][0]  # the exported model is seed 5's run
    assert m["search"]["test_acc"] == best.user_attrs["test_acc"] and m["retrained"]["test_acc_after"] == m["test_acc"]
    out = capsys.readouterr().out
    assert "final training: 1 model(s) x 2 seed(s) = 2 run(s) of 1 epoch(s)" in out
    assert f"trial-{best.number} seed 6 (2/2): epoch 1 of 1, train loss" in out and "min of the final training left" in out
    assert f"(search {100 * best.user_attrs['test_acc']:.2f}%; final training {100 * final['mean']:.2f}% ± " in out
    assert "(2 seeds, 1 epochs))" in out and " seeds: " not in out
    report = (tmp_path / "r" / "report.md").read_text()
    assert "final: mean ± spread over seeds" in report and "the run of seed 5" in report
    # the study keeps the figures: show gives the spread
    again = optuna.load_study(study_name="e", storage=f"sqlite:///{study_db}")
    assert record.finals(again)[best.number]["test_acc"] == final["test_acc"]
    assert main(["show", "--storage", f"sqlite:///{study_db}", "--study", "e"]) == 0
    assert "(2 seeds, 1 epochs)" in capsys.readouterr().out


def test_the_final_training_is_sized_to_the_minutes_given(study_db, synth_dir, tmp_path, capsys):
    for split in ("hypervolume", "equal"):
        assert export(study_db, synth_dir, tmp_path / split, "--retrain", "--retrain-minutes", "0.05",
                      *(["--retrain-split", split] if split == "equal" else [])) == 0
        assert "sized to --retrain-minutes 0.05" in capsys.readouterr().out
        finals = [json.loads((p / "metrics.json").read_text())["final"] for p in (tmp_path / split).iterdir()
                  if p.is_dir()]
        assert len(finals) > 1 and all(f["epochs"] >= 1 and f["split"] == split for f in finals)
        if split == "equal":
            assert len({f["epochs"] for f in finals}) == 1
    for extra, said in ((["--seeds", "2"], "add --retrain"), (["--retrain", "--epochs", "2", "--retrain-minutes", "1"],
                                                              "give one"),
                        (["--retrain", "--retrain-split", "equal"], "add --retrain-minutes")):
        assert export(study_db, synth_dir, tmp_path / "x", *extra) == 2
        assert said in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_predict_on_a_generated_png_and_an_idx_file(exported, study_db, synth_dir, tmp_path, capsys):
    model_dir = next(p for p in exported.iterdir() if p.is_dir())
    rng = np.random.default_rng(1)
    sample = make_images(np.array([3]), rng)[0]
    big = Image.fromarray(255 - sample).resize((120, 90))  # dark object on light paper, other size
    big.save(tmp_path / "photo.png")
    Image.fromarray(sample).convert("RGB").save(tmp_path / "photo.jpg")
    idx.write(tmp_path / "two.idx", make_images(np.array([1, 7]), rng))
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "photo.png"), str(tmp_path / "photo.jpg"),
                 str(tmp_path / "two.idx"), "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith(str(tmp_path / "photo.png"))
    assert lines[2].startswith(f"{tmp_path / 'two.idx'}[0]:")
    for line in lines:
        shown = [part.strip() for part in line.split(": ", 1)[1].split(",")]
        assert len(shown) == 2 and all(any(s.startswith(c + " ") for c in CLASSES) and s.endswith("%") for s in shown)
    assert main(["predict", "--model", str(model_dir), "--eval", "--data-dir", str(synth_dir)]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_png_polarity_and_size_follow_the_dataset():
    from search.handover.predict import to_dataset_image
    dark_on_light = Image.fromarray(np.full((50, 80), 250, np.uint8))
    dark_on_light.paste(10, (30, 10, 50, 40))
    out = to_dataset_image(dark_on_light)
    assert out.shape == (28, 28) and out[14, 14] > 200 and out[0, 0] < 30


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith("notice:")]
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:"), err
    return err[0]


def test_bad_inputs_are_one_line_and_leave_nothing_partial(study_db, synth_dir, exported, tmp_path, capsys):
    empty = tmp_path / "empty.db"
    optuna.create_study(study_name="e", storage=f"sqlite:///{empty}", directions=["maximize", "minimize"])
    assert export(empty, synth_dir, tmp_path / "x") == 2
    assert "no finished trials" in _one_line(capsys) and not (tmp_path / "x").exists()

    assert export(study_db, synth_dir, tmp_path / "x", "--trial", "999") == 2
    assert "--trial 999: no such trial" in _one_line(capsys)

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert export(study_db, synth_dir, blocker / "out") == 2
    assert "cannot write" in _one_line(capsys)

    # A corrupt weights artifact: the previous export in the target folder stays as it was.
    target = tmp_path / "keep"
    shutil.copytree(exported, target)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    store = tmp_path / "store"
    shutil.copytree(study_db.with_name("e-artifacts"), store)
    for f in store.iterdir():
        f.write_bytes(b"garbage")
    assert export(study_db, synth_dir, target, "--artifact-dir", str(store)) == 2
    assert "not a readable weights file" in _one_line(capsys)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keep")]

    model_dir = tmp_path / "model"
    shutil.copytree(next(p for p in exported.iterdir() if p.is_dir()), model_dir)
    (model_dir / "weights.pt").write_bytes(b"\x00" * 64)
    assert main(["predict", "--model", str(model_dir), str(model_dir / "confusion.png")]) == 2
    assert "weights.pt: not a readable weights file" in _one_line(capsys)

    good = next(p for p in exported.iterdir() if p.is_dir())
    (tmp_path / "broken.png").write_bytes(PNG_SIGNATURE + b"truncated")
    assert main(["predict", "--model", str(good), str(tmp_path / "broken.png")]) == 2
    assert "broken.png: cannot decode as an image" in _one_line(capsys)
    assert main(["predict", "--model", str(good), str(tmp_path / "absent.png")]) == 2
    assert "absent.png: cannot read" in _one_line(capsys)


def _snapshot(folder):
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.fixture
def project(study_db, tmp_path, monkeypatch):
    """A user's folder holding the study, its weights and a file of their own; the current folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(study_db, folder / "e.db")
    shutil.copytree(study_db.with_name("e-artifacts"), folder / "e-artifacts")
    (folder / "notes.txt").write_text("my notes")
    (folder / "mywork").mkdir()
    (folder / "mywork" / "draft.py").write_text("print('mine')")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("out, expected", [
    (".", "is the current folder"),
    ("{project}", "is the current folder"),
    ("..", "is the current folder"),
    ("notes.txt", "is not a folder"),
    ("mywork", "was not written by export-best"),
    ("e-artifacts", "holds e-artifacts"),
])
def test_export_never_replaces_what_it_did_not_write(out, expected, project, synth_dir, capsys):
    before = _snapshot(project)
    code = main(["export-best", "--storage", "sqlite:///e.db", "--study", "e", "--data-dir", str(synth_dir),
                 "--out", out.format(project=project)])
    assert code == 2
    assert expected in _one_line(capsys)
    assert _snapshot(project) == before


def test_export_refuses_a_folder_holding_the_database(project, synth_dir, tmp_path, monkeypatch, capsys):
    nested = project / "sub"
    nested.mkdir()
    shutil.move(project / "e.db", nested / "e.db")
    before = _snapshot(project)
    monkeypatch.chdir(tmp_path)  # the current folder is elsewhere: only the database protects `sub`
    assert main(["export-best", "--storage", f"sqlite:///{nested / 'e.db'}", "--study", "e",
                 "--artifact-dir", str(project / "e-artifacts"), "--data-dir", str(synth_dir),
                 "--out", str(nested)]) == 2
    line = _one_line(capsys)
    assert "holds" in line and "e.db" in line
    assert _snapshot(project) == before


def test_export_replaces_only_its_own_earlier_export(project, synth_dir, capsys):
    args = ["export-best", "--storage", "sqlite:///e.db", "--study", "e", "--data-dir", str(synth_dir)]
    (project / "empty").mkdir()
    assert main([*args, "--out", "empty"]) == 0  # an empty folder is fine
    assert main([*args, "--out", "exports/e"]) == 0
    assert main([*args]) == 0  # the default folder, exports/e, written before: replaced
    assert (project / "exports" / "e" / "report.html").is_file()
    marker = json.loads((project / "exports" / "e" / ".fmnist-export").read_text())
    assert "report.html" in marker["files"] and "trial-0/weights.pt" in marker["files"]  # every file, any depth
    assert oct((project / "exports" / "e").stat().st_mode & 0o077) != "0o0"  # readable by others
    capsys.readouterr()
    # A file of the user's at any depth, or one of ours the user changed, is not replaced.
    for added, content in (("mine.txt", "added by the user"), ("trial-0/notes.txt", "my notes on trial 0"),
                           ("trial-0/spec.json", "edited by hand")):
        path = project / "exports" / "e" / added
        original = path.read_bytes() if path.exists() else None
        path.write_text(content)
        assert main([*args]) == 2
        assert f"holds {added!r}" in _one_line(capsys)
        assert path.read_text() == content
        path.unlink() if original is None else path.write_bytes(original)
    (project / "exports" / "e" / "trial-0" / "mine").mkdir()  # an empty folder of the user's, too
    assert main([*args]) == 2 and "holds 'trial-0/mine'" in _one_line(capsys)
    (project / "exports" / "e" / "trial-0" / "mine").rmdir()
    assert main([*args]) == 0  # back as export-best left it: replaced
    capsys.readouterr()
    # An export of the release before (its marker listed top-level names only) is not replaced.
    (project / "exports" / "e" / ".fmnist-export").write_text(json.dumps({"entries": ["report.html"]}))
    assert main([*args]) == 2 and "earlier release" in _one_line(capsys)
    assert main([*args[:4], "", *args[5:]]) == 2
    assert "the name is empty" in _one_line(capsys)
    assert sorted(p.name for p in (project / "exports").iterdir()) == ["e"]


def test_report_html_in_a_real_browser(exported, tmp_path):
    """report.html as a person opens it: every picture loads, nothing is logged as an error."""
    from browser import chromium_page
    with chromium_page() as (page, errors):
        page.goto((exported / "report.html").as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(images) >= 3 and all(done and width > 0 for _, done, width in images), images
    assert errors == []


def test_weights_kept_by_another_worker_are_named_with_where_to_find_them(study_db, synth_dir, tmp_path, capsys):
    """With workers on several machines, each keeps weights in its own folder unless they share one."""
    empty = tmp_path / "this-machine-artifacts"
    empty.mkdir()
    assert export(study_db, synth_dir, tmp_path / "out", "--artifact-dir", str(empty)) == 2
    line = _one_line(capsys)
    assert f"are not in {empty}" in line and "trained it: point --artifact-dir at the folder" in line
    assert "--retrain" in line and not (tmp_path / "out").exists()


def test_the_final_trainings_eta_weighs_each_model_by_its_own_speed(monkeypatch):
    from search.handover import final
    now = [100.0]
    monkeypatch.setattr(final.time, "monotonic", lambda: now[0])
    # a small model at 10,000 images/s and a large one at 100: 6 s and 600 s planned
    schedule = final.Plan(epochs={1: 1, 2: 1}, seeds=(0,), rates={1: 10_000.0, 2: 100.0}, train_images=60_000)
    clock = final.Clock(schedule, started=now[0])
    assert clock.left() == pytest.approx(606)
    now[0] += 12  # the small model took twice its planned time ...
    clock.advance((1, 0), 60_000 / 10_000)
    # ... so the large one ahead is expected at twice its plan, not at the small one's pace in images
    assert clock.left() == pytest.approx(1200)


def test_the_final_trainings_eta_forgets_a_load_that_has_passed(monkeypatch):
    """Another job on the same cores for a while: once it is gone, the ETA follows the pace again."""
    from search.handover import final
    now = [0.0]
    monkeypatch.setattr(final.time, "monotonic", lambda: now[0])
    clock = final.Clock(final.Plan(epochs={1: 1000}, seeds=(0,), rates={1: 60_000.0}, train_images=60_000),
                        started=now[0])  # 1,000 epochs of 1 s planned
    for _ in range(10):  # three times slower for ten epochs ...
        now[0] += 3
        clock.advance((1, 0), clock.done + 1)
    assert clock.left() == pytest.approx(990 * 3)
    for _ in range(int(final.PACE_WINDOW_S) + 10):  # ... then at the plan's pace for longer than the window
        now[0] += 1
        clock.advance((1, 0), clock.done + 1)
    left = 1000 - clock.done
    assert left > 0 and clock.left() == pytest.approx(left)


def test_the_front_widths_run_to_the_next_larger_model_and_the_largest_to_the_reference():
    from search.handover.final import front_widths
    assert front_widths({1: 1_000, 2: 10_000, 3: 100_000}, 5_000_000) == pytest.approx(
        {1: 1.0, 2: 1.0, 3: math.log10(50)})
    assert front_widths({1: 1_000, 2: 1_000, 3: 10_000}, 100_000) == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0})
    assert front_widths({1: 10_000_000}, 5_000_000) == pytest.approx({1: math.log10(2)})


def test_the_minutes_split_by_hypervolume_is_the_best_split_within_them():
    """Against every split that fits, under the a - b/epochs curve the split assumes."""
    from search.handover.final import split_by_hypervolume
    cost, width = {1: 1.0, 2: 7.0, 3: 11.0}, {1: 0.3, 2: 0.2, 3: 1.5}

    def value(e: dict[int, int]) -> float:
        return -sum(width[k] / e[k] for k in e)
    for seconds in (19, 97, 240, 400):
        got = split_by_hypervolume(cost, width, seconds)
        used = sum(cost[k] * got[k] for k in got)
        assert used <= seconds and all(got[k] >= 1 for k in got)
        best = max(value({1: a, 2: b, 3: c}) for b in range(1, 60) for c in range(1, 40)
                   for a in [int((seconds - 7 * b - 11 * c) // 1)] if a >= 1)
        assert value(got) >= best - 1e-3 * abs(best)
    wide = split_by_hypervolume(cost, width, 400)
    assert wide[3] > wide[2]              # the wide model gets more than the narrow one of about its cost
    assert split_by_hypervolume({1: 5.0, 2: 5.0}, {1: 1.0, 2: 1.0}, 100) == {1: 10, 2: 10}
    assert split_by_hypervolume({1: 5.0, 2: 5.0}, {1: 1.0, 2: 1.0}, 3) == {1: 1, 2: 1}  # at least one each


@pytest.mark.parametrize("tta", ["flip", "flip-shift"])
def test_a_model_with_tta_is_exported_with_it(tmp_path, tta):
    """Every exported file predicts as the model does: the mean over its views."""
    from search.handover.export import write_model_files
    from space.network import Views, without_tta
    from space.sample import WARM_STARTS, fixed
    spec = fixed(WARM_STARTS[3])
    spec = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, tta=tta))
    model = build(spec.arch, seed=1)
    x = torch.randn(6, 1, 28, 28)
    diffs = write_model_files(tmp_path / "m", spec, model, x[:2])
    assert max(diffs.values()) <= 1e-3
    inner = without_tta(model).eval()
    with torch.no_grad():
        views = Views(tta).eval()(x).reshape(-1, *x.shape)
        assert len(views) == {"flip": 2, "flip-shift": 10}[tta] and torch.equal(views[1], x.flip(-1))
        expected = torch.stack([inner(v) for v in views]).mean(0).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-4)
    np.testing.assert_allclose(torch.export.load(tmp_path / "m" / "model.pt2").module()(x).detach().numpy(),
                               expected, atol=1e-4)
    np.testing.assert_allclose(torch.jit.load(str(tmp_path / "m" / "model.ts"))(x).detach().numpy(), expected, atol=1e-4)
    assert ModelSpec.from_json((tmp_path / "m" / "spec.json").read_text()).arch.tta == tta


def test_the_tta_choice_measures_each_view_set_as_the_model_predicts_with_it(synth_dir):
    """One pass over the views gives, for each TTA, the accuracy of the model built with that TTA;
    a tie goes to the one with fewer passes."""
    import fmnist
    from search.handover import tta
    from space.network import with_tta, without_tta
    from space.sample import WARM_STARTS, fixed
    spec = fixed(WARM_STARTS[3])
    val = fmnist.make_splits(fmnist.load(synth_dir, download=False), 300, 0).val
    weights = build(spec.arch, seed=2).state_dict()
    accs = tta.validation_accuracy(spec, weights, val, None)
    assert list(accs) == ["none", "flip", "flip-shift"]
    for choice, acc in accs.items():
        model = build(spec.arch)
        model.load_state_dict(weights)
        model = with_tta(without_tta(model), choice)  # the same modules, the same weights
        assert model.state_dict().keys() == build(tta.with_choice(spec, choice).arch).state_dict().keys()
        assert acc == fmnist.accuracy(fmnist.predict(model, val.images), val.labels)
    assert tta.choose({"none": 0.5, "flip": 0.7, "flip-shift": 0.7}) == "flip"
    assert tta.choose({"none": 0.5, "flip": 0.6, "flip-shift": 0.7}) == "flip-shift"
    assert tta.choose({"none": 0.8, "flip": 0.6}) == "none"
    no_flips = fixed(WARM_STARTS[0])
    assert list(tta.validation_accuracy(no_flips, build(no_flips.arch).state_dict(), val, None)) == ["none"]


def test_export_chooses_the_tta_on_validation_unless_told_to_keep_it(study_db, synth_dir, tmp_path, capsys):
    """A front model trained with flips and shifts (its spec says so; its weights are the search's)
    is exported with the TTA its search weights do best with on the study's validation split."""
    import sqlite3
    db = tmp_path / "e.db"
    shutil.copy(study_db, db)
    shutil.copytree(study_db.with_name("e-artifacts"), tmp_path / "e-artifacts")
    t = max(_front(db), key=lambda t: t.user_attrs["val_acc"])
    spec = ModelSpec.from_json(record.spec_text(t))
    assert spec.arch.tta == "none"
    shifted = dataclasses.replace(spec, train=dataclasses.replace(
        spec.train, augment=dataclasses.replace(spec.train.augment, flip=True, shift=1)))
    with sqlite3.connect(db) as con:
        changed = con.execute("UPDATE trial_system_attributes SET value_json = ? WHERE key = ? AND trial_id = ?",
                              (json.dumps(shifted.to_json()), record.SPEC, t._trial_id)).rowcount
    assert changed == 1
    assert export(db, synth_dir, tmp_path / "chosen", "--trial", str(t.number)) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "chosen" / f"trial-{t.number}" / "metrics.json").read_text())
    accs = m["tta_choice"]["val_acc"]
    assert m["tta_choice"]["searched"] == "none" and list(accs) == ["none", "flip", "flip-shift"]
    assert accs["none"] == pytest.approx(t.user_attrs["val_acc"], abs=0.011)  # bf16 vs bf16, same weights
    best, order = max(accs.values()), list(accs)  # ordered by passes
    assert accs[m["tta"]] == best and all(accs[k] < best for k in order[:order.index(m["tta"])])
    written = ModelSpec.from_json((tmp_path / "chosen" / f"trial-{t.number}" / "spec.json").read_text())
    assert written == dataclasses.replace(shifted, arch=dataclasses.replace(shifted.arch, tta=m["tta"]))
    assert f"trial-{t.number}: test-time augmentation {m['tta']}, chosen on validation" in out
    assert "chosen again at export" in (tmp_path / "chosen" / "report.md").read_text()
    # The final training trains and exports the architecture with the choice made on the search's weights
    assert export(db, synth_dir, tmp_path / "final", "--trial", str(t.number), "--retrain", "--epochs", "1") == 0
    final = json.loads((tmp_path / "final" / f"trial-{t.number}" / "metrics.json").read_text())
    assert final["tta"] == m["tta"] and final["final"]["tta"] == m["tta"] and final["final"]["searched_tta"] == "none"
    assert (f", TTA {m['tta']})" in capsys.readouterr().out) == (m["tta"] != "none")
    assert export(db, synth_dir, tmp_path / "kept", "--trial", str(t.number), "--keep-tta") == 0
    kept = json.loads((tmp_path / "kept" / f"trial-{t.number}" / "metrics.json").read_text())
    assert kept["tta"] == "none" and kept["tta_choice"]["val_acc"] is None
    assert "chosen on validation" not in capsys.readouterr().out
    # A study from before the split seed was recorded: no split to choose on, so the search's choice, said so
    with sqlite3.connect(db) as con:
        budget = json.loads(con.execute("SELECT value_json FROM study_user_attributes WHERE key = 'budget'").fetchone()[0])
        del budget["split_seed"]
        con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'budget'", (json.dumps(budget),))
    assert export(db, synth_dir, tmp_path / "old", "--trial", str(t.number)) == 0
    assert "test-time augmentation: as the search chose it (the study records no validation split" in capsys.readouterr().out
    assert json.loads((tmp_path / "old" / f"trial-{t.number}" / "metrics.json").read_text())["tta"] == "none"