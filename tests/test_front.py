"""The front compares trials at equal training, and a final training leaves out leads within the noise.

The figures are those of the fp32 CPU hour (docs/benchmarks.md): cheap nets stretched to 12-15
epochs, the top rung 8 epochs, 10,000 validation images.
"""
from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from fmnist.errors import UsageError
from search.cli import main
from search.handover.choice import select
from search.study import record
from search.view.front import front, lead_noise, ties

HOUR = [  # params, validation accuracy, epochs
    (2_026, 0.8912, 15), (4_374, 0.9047, 15), (4_626, 0.9084, 15), (5_826, 0.9188, 15),
    (41_278, 0.9285, 14), (72_890, 0.9172, 8), (117_754, 0.9291, 12), (175_530, 0.9280, 8),
    (3_709_626, 0.9307, 8),
]
BEHIND = [(2_026, 0.8894, 15), (4_626, 0.9070, 15)]  # the hour's two trials behind a twin of equal epochs


def _trial(params: int, acc: float, epochs: float | None, flops: int = 1000):
    attrs = {"spec": "{}", record.PARAMS: params, record.FLOPS: flops, record.VAL_ACC: acc}
    if epochs is not None:
        attrs[record.EPOCHS_RUN] = epochs
    return optuna.create_trial(state=TrialState.COMPLETE, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                               user_attrs=attrs, values=[acc, float(params)])


def _study(rows, storage=None, name="s", val_images: int | None = 10_000) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["acc", "params"])
    if val_images:
        study.set_user_attr(record.BUDGET, record.Budget(epochs=8, train_images=50_000, val_images=val_images).to_dict())
    for row in rows:
        study.add_trial(_trial(*row))
    return study


def _params(trials) -> list[int]:
    return [t.user_attrs[record.PARAMS] for t in trials]


def test_a_trial_that_trained_longer_does_not_push_a_larger_one_off_the_front():
    study = _study(HOUR + BEHIND)
    optuna_front = {t.number for t in study.best_trials}
    ours = front(study)
    # 72,890 (behind 5,826's 15 epochs) and 175,530 (behind 41,278's 14 and 117,754's 12) had 8
    assert _params(ours) == [p for p, _, _ in HOUR]
    assert optuna_front < {t.number for t in ours}
    assert {t.user_attrs[record.PARAMS] for t in ours if t.number not in optuna_front} == {72_890, 175_530}


def test_a_trial_that_trained_no_longer_still_drops_one_it_beats():
    study = _study([(5_826, 0.9188, 15), (72_890, 0.9172, 15), (80_000, 0.91, 20), (90_000, 0.95, 8)])
    assert _params(front(study)) == [5_826, 90_000]


@pytest.mark.parametrize("seed", range(5))
def test_at_equal_training_the_front_is_optunas(seed):
    rng = random.Random(seed)
    rows = [(rng.randrange(1_000, 10_000), round(rng.uniform(0.8, 0.95), 3), rng.choice([8, None])) for _ in range(60)]
    study = _study(rows)
    assert {t.number for t in front(study)} == {t.number for t in study.best_trials}


@pytest.mark.parametrize("seed", range(5))
def test_no_member_is_dominated_by_a_trial_that_trained_no_longer_and_every_other_trial_is(seed):
    rng = random.Random(seed)
    rows = [(rng.randrange(1_000, 10_000), round(rng.uniform(0.8, 0.95), 3), rng.choice([8, 12, 15])) for _ in range(60)]
    study = _study(rows)
    members = {t.number for t in front(study)}

    def beats(a, b):
        (pa, aa, ea), (pb, ab, eb) = rows[a.number], rows[b.number]
        return ea <= eb and pa <= pb and aa >= ab and (pa, aa) != (pb, ab)

    for t in study.trials:
        beaten = any(beats(o, t) for o in study.trials if o is not t)
        assert (t.number in members) == (not beaten), rows[t.number]


def test_the_noise_is_one_standard_error_of_the_lead():
    assert lead_noise(0.928, 0.9307, 10_000) == pytest.approx(0.0036, abs=1e-4)
    assert lead_noise(0.9, 0.9, 2_500) == pytest.approx(2 * lead_noise(0.9, 0.9, 10_000))


def test_a_lead_within_the_noise_over_a_smaller_member_trained_no_longer_is_a_tie():
    study = _study(HOUR)
    found = ties(study, front(study))
    by_params = {t.number: t.user_attrs[record.PARAMS] for t in study.trials}
    assert [(by_params[t.number], by_params[t.of]) for t in found] == [(4_626, 4_374), (3_709_626, 175_530)]
    assert all(0 < t.lead <= t.noise for t in found)
    # 117,754 leads 72,890 (8 epochs, no more than its 12) by 1.19 points: kept; 41,278 trained
    # 14 epochs, more than 117,754's 12, so its 0.06 points behind say nothing
    assert 117_754 not in {by_params[t.number] for t in found}


def test_a_tie_is_judged_against_the_kept_members_so_a_chain_of_small_leads_keeps_its_far_end():
    study = _study([(1_000, 0.900, 10), (2_000, 0.903, 10), (3_000, 0.906, 10), (4_000, 0.909, 10)])
    found = ties(study, front(study))
    # each step is 0.3 points (noise 0.42): 2,000 ties with 1,000, 3,000 is 0.6 ahead of it
    assert [t.number for t in found] == [1, 3]


def test_without_a_recorded_budget_or_an_accuracy_objective_nothing_is_a_tie():
    assert ties(_study(HOUR, val_images=None), front(_study(HOUR, name="t"))) == []
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_metric_names(["params", "flops"])
    assert ties(study, []) == []


def test_the_final_training_leaves_out_the_ties_and_says_so():
    study = _study(HOUR)
    lines = []
    chosen = select(study, leave_ties=True, log=lines.append)
    assert _params(chosen) == [2_026, 4_374, 5_826, 41_278, 72_890, 117_754, 175_530]
    assert len(lines) == 1 and "leaves out 2 front member(s)" in lines[0] and "--whole-front" in lines[0]
    assert _params(select(study)) == _params(front(study))  # without a final training, the whole front
    assert _params(select(study, trials=[8], leave_ties=True)) == [3_709_626]  # asked for by number


def test_show_names_the_ties_and_the_cli_refuses_whole_front_without_a_final_training(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    _study(HOUR, storage=url)
    assert main(["show", "--storage", url, "--study", "s"]) == 0
    out = capsys.readouterr().out
    assert "export-best --retrain leaves out 2 front member(s)" in out and "trial 8 (+0.27 points over trial 7" in out
    for argv, message in ((["--whole-front"], "--whole-front: belongs to the final training"),
                          (["--retrain", "--whole-front", "--trial", "1"], "--whole-front: the front is not")):
        assert main(["export-best", *argv, "--storage", url, "--study", "s", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists()
    assert len(optuna.load_study(study_name="s", storage=url).trials) == len(HOUR)


def test_choosing_nothing_is_still_one_line():
    with pytest.raises(UsageError, match="no finished trials"):
        select(optuna.create_study(directions=["maximize", "minimize"]), leave_ties=True)
