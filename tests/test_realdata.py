"""Checks on the official files; skipped cleanly when they are not on this machine."""
from __future__ import annotations

import numpy as np
import pytest

import fmnist
from conftest import real_data_dir
from fmnist import TrainSpec
from space import build, zoo

DATA = real_data_dir()
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(DATA is None, reason="real Fashion-MNIST not found (set FMNIST_DATA)")]


def test_official_files_are_recognised_and_complete():
    ds = fmnist.load(DATA, download=False)
    assert ds.official and not ds.notices
    assert len(ds.train) == 60_000 and len(ds.test) == 10_000
    assert np.bincount(ds.train.labels.numpy()).tolist() == [6000] * 10


def test_default_split_is_stratified_and_fixed_by_seed():
    ds = fmnist.load(DATA, download=False)
    a, b = fmnist.make_splits(ds, seed=0), fmnist.make_splits(ds, seed=0)
    assert len(a.train) == 50_000 and len(a.val) == 10_000
    assert np.bincount(a.val.labels.numpy()).tolist() == [1000] * 10
    assert (a.val.labels == b.val.labels).all() and (a.val.images == b.val.images).all()


def test_a_short_run_learns_real_data():
    ds = fmnist.load(DATA, download=False)
    data = fmnist.make_splits(ds, val_size=2000, train_subset=5000)
    result = fmnist.train(build(zoo.get("seed004-lenet5").arch), data, TrainSpec(epochs=2, batch_size=128))
    assert result.val_acc > 0.7 and result.test_acc > 0.7
