"""Pareto pruning: the rung rule on hand-made values, and a study that ends with pruned trials."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from fmnist import Report
from search.cli import main
from search.pareto import dominates, hypervolume_2d, nondominated_ranks
from search.loop.prune import Entry, ParetoPruner, decide, rung_images, rung_val_size


def test_rungs_are_geometric_from_a_cheap_first_rung_to_the_whole_budget():
    assert rung_images(750_000) == [9_259, 27_777, 83_333, 250_000]  # the top rung, 750,000, ends training
    assert rung_images(150_000) == [5_555, 16_666, 50_000]
    assert rung_images(150_000, factor=2, min_images=20_000) == [37_500, 75_000]
    assert rung_images(10_000) == []  # a budget too small for any rung below the top
    assert all(r >= 4000 for r in rung_images(10_000_000))


def test_rung_decisions_use_a_validation_subset_sized_for_them():
    assert [rung_val_size(i) for i in range(4)] == [2000, 4000, 8000, 16000]


# At one rung: (trial number, params, validation accuracy).
PEERS = [Entry(0, (10_000,), 0.80), Entry(1, (50_000,), 0.86), Entry(2, (200_000,), 0.88),
         Entry(3, (400_000,), 0.89), Entry(4, (60_000,), 0.84), Entry(5, (300_000,), 0.85)]


def test_a_clearly_dominated_trial_is_pruned():
    reason = decide(Entry(9, (500_000,), 0.82), PEERS, factor=3, min_trials=5)
    assert reason and reason.startswith("Pareto rank")


def test_a_non_dominated_trial_continues_even_with_low_accuracy_rank():
    assert decide(Entry(9, (450_000,), 0.895), PEERS, factor=3, min_trials=5) is None  # most accurate
    assert decide(Entry(9, (20_000,), 0.83), PEERS, factor=3, min_trials=5) is None   # nothing as small beats it


def test_a_small_model_is_not_pruned_for_lower_accuracy_alone():
    tiny = Entry(9, (2_000,), 0.55)  # far less accurate than everyone, but the smallest
    assert decide(tiny, PEERS, factor=3, min_trials=5) is None


def test_dominated_but_within_the_best_third_continues():
    peers = [Entry(0, (10_000,), 0.80), Entry(1, (20_000,), 0.70), Entry(2, (30_000,), 0.60),
             Entry(3, (40_000,), 0.50), Entry(4, (50_000,), 0.40), Entry(5, (60_000,), 0.30)]
    assert decide(Entry(9, (15_000,), 0.79), peers, factor=3, min_trials=5) is None  # rank 1, 3rd of 7
    assert decide(Entry(9, (65_000,), 0.20), peers, factor=3, min_trials=5) is not None


def test_clearly_beaten_by_one_no_larger_is_pruned_even_within_the_best_third():
    peers = [Entry(0, (10_000,), 0.80), Entry(1, (20_000,), 0.70), Entry(2, (30_000,), 0.60),
             Entry(3, (40_000,), 0.50), Entry(4, (50_000,), 0.40), Entry(5, (60_000,), 0.30)]
    beaten = Entry(9, (15_000,), 0.785)  # rank 1, 3rd of 7: MOASHA alone lets it continue
    assert decide(beaten, peers, factor=3, min_trials=5, margin=None) is None
    reason = decide(beaten, peers, factor=3, min_trials=5, margin=0.01)
    assert reason and reason.startswith("trial 0 (10,000 params") and "1.5 points" in reason
    near_twin = Entry(9, (15_000,), 0.795)  # half a point behind: not clearly beaten
    assert decide(near_twin, peers, factor=3, min_trials=5, margin=0.01) is None
    tiny = Entry(9, (5_000,), 0.40)  # the smallest: nothing as small beats it, whatever the margin
    assert decide(tiny, peers, factor=3, min_trials=5, margin=0.0) is None


def test_with_params_and_flops_a_trial_must_be_larger_in_both_to_be_beaten():
    peers = [Entry(i, (10_000 * (i + 1), 5_000_000), 0.80 - 0.01 * i) for i in range(6)]
    lean = Entry(9, (40_000, 1_000_000), 0.70)  # more params than trial 0, far fewer FLOPs
    assert decide(lean, peers, factor=3, min_trials=5, margin=0.01, names=("params", "flops")) is None
    heavy = Entry(9, (40_000, 6_000_000), 0.70)
    reason = decide(heavy, peers, factor=3, min_trials=5, margin=0.01, names=("params", "flops"))
    assert reason and reason.startswith("trial 0 (10,000 params, 5,000,000 flops; this one 40,000 params")


def test_nothing_is_pruned_before_enough_trials_reach_the_rung():
    assert decide(Entry(9, (500_000,), 0.10), PEERS[:3], factor=3, min_trials=5, margin=0.01) is None


def _study_with_peers(rung: int) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for e in PEERS:
        study.add_trial(optuna.create_trial(
            state=TrialState.COMPLETE, values=[e.acc, e.costs[0]], params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"params": e.costs[0], f"rung_{rung}": e.acc}))
    return study


def test_hook_records_each_rung_and_prunes_on_the_hand_made_curve():
    study = _study_with_peers(2000)
    trial = study.ask()
    hook = ParetoPruner(study).hook(trial, {"params": 500_000}, [1000, 2000], 6000)
    assert hook(Report(0.5, 1000, 1.0, 0.60, checkpoints=(1000,))) is None  # first rung: no peers there yet, not at chance
    reason = hook(Report(1.0, 2000, 0.8, 0.82, checkpoints=(2000,)))
    assert reason and "rung 2,000 images" in reason and "trial 3 (400,000 params" in reason
    assert "7.0 points more accurate" in reason
    attrs = study.trials[-1].user_attrs
    assert attrs["rung_1000"] == 0.60 and attrs["rung_2000"] == 0.82 and attrs["pruned_rung"] == 2000


def test_chance_level_is_pruned_at_the_first_rung():
    study = _study_with_peers(2000)
    trial = study.ask()
    trial.set_user_attr("params", 1_000)
    reason = ParetoPruner(study).hook(trial, {"params": 1_000}, [1000, 2000], 6000)(Report(0.5, 1000, 2.3, 0.11, checkpoints=(1000,)))
    assert reason and "still at chance" in reason



def _finished(study: optuna.Study, params: int, final: float, rungs: dict[int, float], images: int = 12_000) -> None:
    study.add_trial(optuna.create_trial(
        state=TrialState.COMPLETE, values=[final, params], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"params": params, "val_acc": final, "images_seen": images,
                    **{f"rung_{r}": a for r, a in rungs.items()}}))


def test_a_seed_is_judged_by_what_its_project_reported_not_by_how_fast_it_starts():
    study = _study_with_peers(2000)
    seed = study.ask({"x": FloatDistribution(0, 1)})
    seed.set_user_attr("preset", "seed001-conv2dsimple2")  # reports 93.6%
    hook = ParetoPruner(study).hook(seed, {"params": 609_890}, [1000, 2000, 4000], 12000, reported=0.936)
    assert hook(Report(0.5, 1000, 2.0, 0.50, checkpoints=(1000,))) is None  # far behind its peers: a slow start
    assert hook(Report(1.0, 2000, 1.9, 0.60, checkpoints=(2000,))) is None  # the margin rule would have pruned it
    _finished(study, 100_000, 0.94, {2000: 0.90})  # a finished trial no larger above 93.6%
    reason = hook(Report(2.0, 4000, 1.8, 0.70, checkpoints=(4000,)))
    assert reason and "above the 93.60% this seed's project reports" in reason and "100,000 params" in reason


def test_a_trial_that_cannot_catch_up_with_a_finished_one_no_larger_stops_though_on_the_rungs_front():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, gain in enumerate((0.05, 0.04, 0.06, 0.03)):  # finished trials gained 3-6 points from rung 1,000
        _finished(study, 40_000 + i, 0.80 + gain, {1000: 0.80})
    _finished(study, 50_000, 0.90, {1000: 0.84})
    pruner = ParetoPruner(study)  # margin 0.01
    big = pruner.cannot_catch_up((3_700_000,), 0.80, 1000)  # the most accurate at the rung, but 0.80 + 0.06 + 0.01 < 0.90
    assert big and "reached 90.0%" in big and "50,000 params" in big
    assert pruner.cannot_catch_up((3_700_000,), 0.85, 1000) is None  # may still end above 90%
    assert pruner.cannot_catch_up((1_000,), 0.50, 1000) is None  # nothing finished is as small
    assert pruner.cannot_catch_up((3_700_000,), 0.80, 5000) is None  # no finished trial passed that rung
    for i in range(3):  # finished trials of twice the schedule that gained 15 points from the rung
        _finished(study, 30_000 + i, 0.95, {1000: 0.80}, images=24_000)
    assert pruner.cannot_catch_up((3_700_000,), 0.80, 1000) is None  # their gains count among all
    same = pruner.cannot_catch_up((3_700_000,), 0.80, 1000, budget=12_100)  # on the others' schedule (12,000)
    assert same and "reached 95.0%" in same and "3 in 4 of 5)" in same
    assert pruner.cannot_catch_up((3_700_000,), 0.80, 1000, budget=24_000) is None  # gains of 15: may reach 95%
    trial = study.ask()
    # with too few peers for the rung's own rule, the finished trials still decide
    hook = ParetoPruner(study, min_trials=50).hook(trial, {"params": 3_700_000}, [1000, 3000], 12_000)
    reason = hook(Report(0.5, 1000, 1.0, 0.80, checkpoints=(1000,)))
    assert reason and reason.startswith("at rung 1,000 images: a finished trial no larger")


def _study_at_rung(rung: int, entries: list[Entry]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for e in entries:
        study.add_trial(optuna.create_trial(
            state=TrialState.PRUNED, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"params": e.costs[0], f"rung_{rung}": e.acc}))
    return study


def test_too_few_peers_at_a_rung_falls_back_to_a_stricter_cut_at_the_rung_below():
    # Nine trials reached rung 1,000, none rung 3,000 yet: the first to arrive there is judged at
    # rung 1,000 again, where only the best 1/9 may go on (not 1/3).
    below = [Entry(i, (10_000 * (i + 1),), 0.80 - 0.08 * i) for i in range(8)]  # each beaten by the one before
    study = _study_at_rung(1000, below)
    pruner = ParetoPruner(study, margin=None)
    second = Entry(99, (15_000,), 0.79)  # rank 1, 2nd of 9 at the rung: in the best third, not the best ninth
    assert decide(second, below, factor=3, min_trials=5) is None
    reason = pruner.judge(99, (15_000,), {1000: 0.79, 3000: 0.80}, [1000, 3000], index=1)
    assert reason and "too few trials at this one" in reason and "the best 1 continue" in reason
    best = pruner.judge(99, (5_000,), {1000: 0.90, 3000: 0.92}, [1000, 3000], index=1)
    assert best is None  # rank 0 two rungs down: on to the top


def test_a_trial_that_cannot_reach_the_top_rung_before_the_deadline_stops():
    import time
    study = _study_with_peers(2000)
    trial = study.ask()
    hook = ParetoPruner(study).hook(trial, {"params": 1_000}, [1000, 2000], 10_000_000,
                                    deadline=time.monotonic() + 5)
    time.sleep(0.05)  # 1,000 images in 50 ms: 10M would take over 8 minutes, with 5 s left
    reason = hook(Report(0.5, 1000, 1.0, 0.60, checkpoints=(1000,)))
    assert reason and reason.startswith("out of time")


def test_a_study_with_the_pareto_pruner_ends_with_pruned_trials_and_reasons(synth_dir, tmp_path):
    db = tmp_path / "p.db"
    assert main(["--data-dir", str(synth_dir), "--storage", f"sqlite:///{db}", "--study", "p", "--quiet",
                 "--val-size", "100", "--epochs", "3", "--max-flops", "3000000", "--trials", "10",
                 "--rung-min-images", "100", "--prune-min-trials", "3", "--seed", "2"]) == 0
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{db}")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and "skipped" not in t.user_attrs]
    assert pruned
    full = 500 * 3
    for t in pruned:
        assert t.user_attrs["pruned_reason"].startswith("at rung ")
        assert t.user_attrs["pruned_rung"] in (166, 500) and t.user_attrs["images_seen"] < full
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all("rung_166" in t.user_attrs and "rung_500" in t.user_attrs for t in done)


def test_pareto_helpers():
    assert dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1)) and not dominates((0, 3), (1, 2))
    pts = [(1, 3), (2, 2), (3, 1), (2.5, 2.5)]
    assert nondominated_ranks(pts) == [0, 0, 0, 1]
    assert hypervolume_2d(pts, (4, 4)) == pytest.approx(6.0)
    assert hypervolume_2d([(5, 5)], (4, 4)) == 0.0


def test_a_worker_sees_the_rung_values_another_worker_wrote(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    mine = optuna.create_study(storage=url, study_name="w", directions=["maximize", "minimize"])
    theirs = optuna.load_study(storage=url, study_name="w")  # another process's handle on the storage
    for e in PEERS:
        trial = theirs.ask()
        trial.set_user_attr("params", e.costs[0])
        trial.set_user_attr("rung_2000", e.acc)
        theirs.tell(trial, [e.acc, e.costs[0]])
    trial = mine.ask()
    reason = ParetoPruner(mine).hook(trial, {"params": 500_000}, [2000], 6000)(Report(1.0, 2000, 0.8, 0.82, checkpoints=(2000,)))
    assert reason and "trial 3 (400,000 params" in reason  # a trial the other worker ran


def test_the_margin_rule_compares_near_twins_of_one_family():
    peers = [Entry(i, (10_000 * (i + 1),), 0.90 - 0.02 * i, "plain") for i in range(6)]
    residual = Entry(9, (150_000,), 0.85, "residual")  # slower to start than the plain ones
    assert decide(residual, peers, factor=3, min_trials=5, margin=0.01) is None or \
        "points more accurate" not in decide(residual, peers, factor=3, min_trials=5, margin=0.01)
    plain = Entry(9, (150_000,), 0.85, "plain")
    assert "points more accurate" in decide(plain, peers, factor=3, min_trials=5, margin=0.01)


def test_a_warm_start_is_stopped_only_at_chance():
    study = _study_with_peers(2000)
    trial = study.ask()
    hook = ParetoPruner(study).hook(trial, {"params": 500_000}, [1000, 2000], 6000, warm_start=True)
    assert hook(Report(0.5, 1000, 1.0, 0.60, checkpoints=(1000,))) is None
    assert hook(Report(1.0, 2000, 0.8, 0.62, checkpoints=(2000,))) is None  # far behind its peers: goes on
    again = ParetoPruner(study).hook(study.ask(), {"params": 500_000}, [1000, 2000], 6000, warm_start=True)
    assert "still at chance" in again(Report(0.5, 1000, 2.3, 0.11, checkpoints=(1000,)))
