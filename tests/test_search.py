"""A small study on synthetic data, end to end through main(), and what it leaves in the storage."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

import fmnist
from space import ModelSpec, flops, param_count
from space.sample import WARM_STARTS, fixed, sample

from search.cli import main
from search.loop import options
from search.loop.run import counts_toward_trials
from search.study import record
from search.testing.support import FAST, load_study as load, run_search as run


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


def test_a_residual_candidate_queued_before_first_blocks_trains_the_network_it_stood_for(synth_dir, tmp_path):
    """A configuration queued by the space before `first_blocks` existed (a failed trial queued
    again, a warm start of a study begun before) keeps its meaning then: as many residual blocks
    at 28x28 as in the later stages, not a newly sampled number under the old parameters."""
    db = tmp_path / "d.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds") == 0
    study = load(db)
    old = {k: v for k, v in {**WARM_STARTS[6], "width": 8}.items() if k != "first_blocks"}
    then = optuna.trial.FixedTrial({**old, "first_blocks": 2})
    sample(then, 1)
    # as reclaim.retry queues a failed trial (its parameters stored), and as enqueue_trial a warm start
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params={**old, "blocks": 1},
                                        distributions={k: then.distributions[k] for k in old}))
    study.enqueue_trial({**old, "blocks": 3, "widen": 1.5})
    queued = len(study.trials)
    assert run(synth_dir, db, "--trials", "3", "--no-enqueue-seeds") == 0
    for t, blocks in zip(load(db).trials[queued - 2:queued], (1, 3)):
        assert t.params["blocks"] == t.params["first_blocks"] == blocks, t.params
        arch = ModelSpec.from_json(record.spec_text(t)).arch
        assert arch == fixed(t.params).arch and sum(c.filters == 8 for c in arch.convs) == 1 + 2 * blocks


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
    err = capsys.readouterr().err
    assert "--study 'nope': no such study in this storage (studies: s)" in err


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


def test_every_complete_trial_reached_the_top_rung_and_seeds_are_pruned_like_any_other(synth_dir, tmp_path):
    from space.sample import WARM_STARTS
    db = tmp_path / "top.db"
    n_trials = str(len(WARM_STARTS) + 1)  # the warm starts, then the cheapest seed model
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", "s", "--quiet",
                 "--val-size", "100", "--epochs", "3", "--trials", n_trials, "--rung-min-images", "100",
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

    from space.sample import REFERENCE, WARM_STARTS, sample

    from search.loop.run import enqueue_warm_starts
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert enqueue_warm_starts(study) == len(WARM_STARTS) and enqueue_warm_starts(study) == 0
    sizes = [param_count(sample(FixedTrial(p), 1).arch) for p in WARM_STARTS]
    up_to_reference = sizes[:WARM_STARTS.index(REFERENCE) + 1]
    assert up_to_reference == sorted(up_to_reference) and sizes[0] < 5_000 and up_to_reference[-1] > 50_000


def test_the_budget_follows_the_timeout_and_is_kept_by_the_study(synth_dir, tmp_path, capsys):
    import torch

    from search.loop.plan import MAX_EPOCHS, TOP_RUNG_SHARE, pick_profile
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


def test_the_speed_probe_takes_its_fastest_run_so_a_busy_moment_does_not_shrink_the_budget(monkeypatch):
    import types

    import torch

    from search.loop import plan
    speeds = iter([900.0, 2400.0, 1500.0, 2300.0])  # warm-up, then a run slowed by a neighbour
    monkeypatch.setattr(fmnist, "train", lambda *a, **k: types.SimpleNamespace(images_per_s=next(speeds)))
    x = torch.zeros(64, 1, 28, 28)
    split = fmnist.Split(x, torch.zeros(64, dtype=torch.long))
    rate = plan.measure_rate(plan.reference_spec(), fmnist.Splits(split, split, split), "fp32", repeats=3)
    assert rate == 2400.0 and next(speeds, None) is None
    # 2,400 img/s sizes two epochs of a 10-minute search; the slowed 1,500 alone would have sized one
    cpu = torch.device("cpu")
    assert plan.pick_profile(cpu, timeout=600, rate=lambda: rate).epochs == 2
    assert plan.pick_profile(cpu, timeout=600, rate=lambda: 1500.0).epochs == 1


def test_the_pace_line_fits_both_measured_nets_and_a_noisy_pair_gives_a_flat_line():
    from search.loop.plan import Pace
    pace = Pace.fit((14_677_760, 2_264.0), (564_800, 10_811.7))  # the reference and the smallest, one thread
    assert pace.seconds(14_677_760) == pytest.approx(1 / 2_264.0) and pace.seconds(564_800) == pytest.approx(1 / 10_811.7)
    assert pace.seconds(14_677_760, images=2_264) == pytest.approx(1.0)
    flat = Pace.fit((14_677_760, 3_000.0), (564_800, 2_000.0))  # the big net measured faster: noise
    assert flat.per_flop == 0 and flat.seconds(564_800) == flat.seconds(14_677_760) == pytest.approx(1 / 3_000.0)


def test_cheap_candidates_train_as_long_as_the_reference_would_within_the_caps():
    from search.loop.plan import MAX_EPOCHS, STRETCH_MAX, Pace, Plan, reference_spec
    from space import pass_flops
    ref = pass_flops(reference_spec().arch)
    pace = Pace.fit((ref, 2_264.0), (564_800, 10_811.7))
    plan = Plan(epochs=2, pace=pace, stretch_epochs=STRETCH_MAX * 2)
    assert plan.epochs_for(ref) == 2 and plan.epochs_for(10 * ref) == 2  # the reference and larger: the top rung's
    assert plan.epochs_for(564_800) == 8      # 4.8 times as fast: capped at 4 times the epochs
    assert plan.epochs_for(ref // 2) == 3     # round(2 x 1.8)
    assert Plan(epochs=13, pace=pace, stretch_epochs=MAX_EPOCHS["cpu"]).epochs_for(564_800) == MAX_EPOCHS["cpu"]
    assert Plan(epochs=2).epochs_for(564_800) == 2  # no pace measured (no --timeout, or a GPU): no stretch
    from search.commands import stretch_note
    assert "up to 8 epochs" in stretch_note(plan) and "--no-stretch-cheap: all 2" in stretch_note(plan)
    assert stretch_note(Plan(epochs=2)) == ""


def test_the_time_cap_counts_a_small_nets_fixed_cost_an_image():
    from search.loop.plan import Pace, Plan
    from search.loop.trial import over_budget
    plan = Plan(pace=Pace(fixed=1e-4, per_flop=0.0), max_top_seconds=60.0)
    assert over_budget(plan, 1_000, 1_000, 1_000, top_images=500_000) is None  # 50 s
    why = over_budget(plan, 1_000, 1_000, 1_000, top_images=700_000)          # 70 s
    assert why and "top-rung training would take about 1.2 min here, over 1.0 min (25% of --timeout" in why


def test_cheap_candidates_train_longer_unless_the_user_says_otherwise(synth_dir, tmp_path, monkeypatch):
    from search.loop import plan
    monkeypatch.setattr(plan, "TOP_RUNG_SHARE", 10**9)  # the timeout sizes a top rung of 1 epoch
    # A pace like this CPU's (the reference net 2-3 times as slow an image as the small warm starts):
    # measured on 500 synthetic images it is noise, and can come out flat (no stretch) under load.
    measured = []
    monkeypatch.setattr(plan, "measure_pace", lambda *a, **k: measured.append(1) or plan.Pace(2e-5, 2e-12))
    common = ["--data-dir", str(synth_dir), "--study", "s", "--val-size", "100", "--quiet", "--seed", "1",
              "--trials", "2", "--no-enqueue-seeds", "--timeout", "600"]
    assert main([*common, "--storage", f"sqlite:///{tmp_path / 'sized.db'}"]) == 0
    study = load(tmp_path / "sized.db")
    assert study.user_attrs["budget"]["epochs"] == 1
    warm = [t for t in study.trials if t.state == TrialState.COMPLETE]  # the two smallest warm starts
    assert len(warm) == 2
    for t in warm:
        epochs = ModelSpec.from_json(record.spec_text(t)).train.epochs
        assert 1 < epochs <= plan.STRETCH_MAX and t.user_attrs["epochs_run"] == epochs
    # The budget keeps the pace: a rerun (or another worker) sizes cheap nets' epochs with it, so
    # the same architecture gets the same epochs; it measures nothing.
    assert study.user_attrs["budget"]["pace"] == [2e-5, 2e-12] and len(measured) == 1
    assert common[-5:-3] == ["--trials", "2"]
    assert main([*common[:-4], "3", *common[-3:], "--storage", f"sqlite:///{tmp_path / 'sized.db'}"]) == 0
    assert len(measured) == 1
    again = [t for t in load(tmp_path / "sized.db").trials if t.state == TrialState.COMPLETE]
    assert len(again) == 3 and ModelSpec.from_json(record.spec_text(again[2])).train.epochs > 1
    for name, extra in (("given", ["--epochs", "1"]), ("off", ["--no-stretch-cheap"])):
        assert main([*common, *extra, "--storage", f"sqlite:///{tmp_path / f'{name}.db'}"]) == 0
        done = [t for t in load(tmp_path / f"{name}.db").trials if t.state == TrialState.COMPLETE]
        assert done and all(ModelSpec.from_json(record.spec_text(t)).train.epochs == 1 for t in done)


def test_a_search_without_validation_images_is_refused_at_once(synth_dir, tmp_path, capsys):
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{tmp_path / 'v.db'}", "--val-size", "0",
                 "--trials", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--val-size 0" in err[0] and not (tmp_path / "v.db").exists()


@pytest.mark.parametrize("device, message", [("cuda:x", "must be one of auto, cpu, cuda or cuda:K"),
                                             ("tpu:0", "must be one of auto, cpu, cuda or cuda:K")])
def test_bad_devices_are_one_line(device, message, capsys):
    assert main(["train", "--preset", "seed003", "--device", device]) == 2
    assert message in capsys.readouterr().err
