"""Every assumption search.study.optuna_api makes about Optuna's internals, checked against the
installed Optuna: a release that moves one fails here, loudly, by name."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage

from search.study import optuna_api
from search.study.storage import open_storage

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_the_installed_optuna_is_in_the_range_pyproject_pins():
    pin = re.search(r'"optuna>=([\d.]+),<([\d.]+)"', PYPROJECT.read_text())
    assert pin, "pyproject.toml pins no range for optuna"
    have = tuple(int(x) for x in optuna.__version__.split(".")[:2])
    low = tuple(int(x) for x in pin.group(1).split(".")[:2])
    high = tuple(int(x) for x in pin.group(2).split(".")[:2])
    assert low <= have < high, f"Optuna {optuna.__version__} is outside the tested range {pin.group(0)}"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() outside optimize(), on purpose
def test_a_study_on_an_rdb_storage_exposes_what_the_adapter_reads(tmp_path):
    study = optuna.create_study(study_name="a", storage=open_storage(f"sqlite:///{tmp_path / 'a.db'}"),
                                directions=["maximize", "minimize"])
    backend = optuna_api.backend(study)
    assert isinstance(backend, RDBStorage) and optuna_api.is_rdb(backend)
    assert isinstance(optuna_api.engine(study), sqlalchemy.engine.Engine)
    assert optuna_api.study_id(study) == optuna_api.storage(study).get_study_id_from_name("a")
    trial = study.ask()
    assert optuna_api.trial_id(trial) == optuna_api.trial_id(study.trials[0])
    optuna_api.set_trial_system_attr(trial, "k", [1, 2])
    optuna_api.set_study_system_attr(study, "s", {"x": 1})
    assert study.trials[0].system_attrs["k"] == [1, 2] and optuna_api.study_system_attrs(study)["s"] == {"x": 1}
    created = set(sqlalchemy.inspect(optuna_api.engine(study)).get_table_names())
    assert created == optuna_api.table_names(), "the tables Optuna creates are not the ones the adapter names"


def test_a_trial_given_parameters_shows_them_and_answers_fixed_ones_without_sampling():
    study = optuna.create_study()
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.WAITING, params={"a": 1},
                                        distributions={"a": optuna.distributions.IntDistribution(0, 3)}))
    study.enqueue_trial({"b": 2})
    stored, enqueued = study.ask(), study.ask()
    assert optuna_api.given_params(stored) == {"a": 1} and optuna_api.given_params(enqueued) == {"b": 2}
    optuna_api.fix_params(stored, {"c": 3})
    assert stored.suggest_int("c", 0, 3) == 3 and stored.suggest_int("a", 0, 3) == 1
    assert study.trials[0].params == {"a": 1, "c": 3}
    assert optuna_api.given_params(study.ask()) == {}


def test_an_in_memory_study_has_no_engine():
    assert optuna_api.engine(optuna.create_study()) is None


def test_every_storage_method_wrapped_for_outages_exists_and_the_cache_calls_the_private_ones():
    missing = [name for name in optuna_api.STORAGE_METHODS if not callable(getattr(RDBStorage, name, None))]
    assert not missing, f"RDBStorage has no {missing}"
    cache = inspect.getsource(optuna.storages._cached_storage)
    private = [n for n in optuna_api.STORAGE_METHODS if n.startswith("_")]
    assert all(f"_backend.{n}(" in cache for n in private), "Optuna's cache calls other private storage methods"


def test_the_other_optuna_and_dashboard_entry_points_used():
    assert callable(optuna.storages.fail_stale_trials)
    assert "skip_table_creation" in inspect.signature(RDBStorage.__init__).parameters
    import optuna_dashboard
    assert callable(optuna_dashboard.save_note) and callable(optuna_dashboard.save_plotly_graph_object)
    assert callable(optuna_dashboard.wsgi)
