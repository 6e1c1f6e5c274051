"""The trial record is a data contract: what kind of trial each is, rung keys, the schema version."""
from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.study import record
from search.cli import main


def _trial(state, **attrs):
    return optuna.create_trial(state=state, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                               user_attrs=attrs, values=[0.9, 100.0] if state == TrialState.COMPLETE else None)


def test_each_kind_of_trial_is_told_apart():
    trained = _trial(TrialState.COMPLETE, spec="{}", params=100, flops=1000, val_acc=0.9)
    pruned = _trial(TrialState.PRUNED, pruned_reason="at rung 4,000 images: ...")
    skipped = _trial(TrialState.PRUNED, skipped="over --max-params")
    seed = _trial(TrialState.WAITING, preset="seed003")
    assert [record.kind(t) for t in (trained, pruned, skipped, seed)] == ["complete", "pruned", "skipped", "waiting"]
    assert record.was_trained(trained) and record.was_trained(pruned)
    assert not record.was_trained(skipped) and not record.was_trained(seed)
    assert record.is_seed(seed) and not record.is_seed(trained)
    assert record.is_ours(trained) and not record.is_ours(pruned)


def test_rung_keys_round_trip():
    t = _trial(TrialState.PRUNED, **{record.rung_key(4000): 0.7, record.rung_key(12000): 0.8, "rung_note": "x"})
    assert record.rung_key(4000) == "rung_4000"  # the name in users' databases: never to change
    assert record.rungs_of(t) == {4000: 0.7, 12000: 0.8}


def test_a_new_study_carries_the_schema_version_and_what_its_values_mean(tmp_path, synth_dir):
    from search.loop import options
    from search.study import opening as studies, storage
    url = f"sqlite:///{tmp_path / 'v.db'}"
    s = studies.open_study(storage.open_storage(url), "v", ("acc", "params"), options.make_sampler("random", 0))
    assert s.user_attrs[record.SCHEMA] == record.SCHEMA_VERSION
    assert s.user_attrs[record.OBJECTIVE_MEANINGS] == {"acc": "validation accuracy", "params": "trainable parameters"}


def test_a_study_written_by_a_newer_release_is_refused_in_one_line(tmp_path, synth_dir, capsys):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    study.set_metric_names(["acc", "params"])
    study.set_user_attr(record.SCHEMA, record.SCHEMA_VERSION + 1)
    capsys.readouterr()
    for argv in (["show"], ["export-best", "--out", str(tmp_path / "out")],
                 ["search", "--data-dir", str(synth_dir), "--trials", "1", "--quiet"]):
        assert main([*argv, "--storage", url, "--study", "s"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"record schema {record.SCHEMA_VERSION + 1}" in err, err
    assert optuna.load_study(study_name="s", storage=url).trials == []  # nothing written
    assert not (tmp_path / "out").exists()


def test_a_study_from_before_versioning_reads_as_version_1(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    study.set_metric_names(["acc", "params"])
    study.add_trial(_trial(TrialState.COMPLETE, spec="{}", params=100, flops=1000, val_acc=0.9, test_acc=0.88))
    assert main(["show", "--storage", url, "--study", "s"]) == 0
    assert "1 complete" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["1", 2.5, "v2"])
def test_a_malformed_schema_attribute_is_refused(bad):
    from fmnist.errors import UsageError
    with pytest.raises(UsageError, match="record schema"):
        record.check_schema("s", {record.SCHEMA: bad})
