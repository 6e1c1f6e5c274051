"""Loading the IDX files: layouts, official-file recognition, every bad input, the split."""
from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

import fmnist
from fmnist import errors
from fmnist import idx
from fmnist.data import FILES, make_splits, stratified_pick
from fmnist.errors import DataError
from search.cli import main
from search.testing.synthetic import write_dataset


def test_loads_flat_gz_folder_with_a_notice(synth_dir):
    ds = fmnist.load(synth_dir, download=False)
    assert ds.train.images.shape == (600, 28, 28) and ds.test.images.shape == (200, 28, 28)
    assert ds.train.images.dtype.is_floating_point is False
    assert set(ds.train.labels.tolist()) == set(range(10))
    assert ds.official is False
    assert len(ds.notices) == 1 and "not the official" in ds.notices[0]
    assert all(stem in ds.notices[0] for stem in FILES.values())


def test_loads_raw_files_in_torchvision_layout(tmp_path):
    raw = write_dataset(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = fmnist.load(tmp_path, download=False)
    assert ds.folder == raw and len(ds.train) == 600


def test_data_dir_from_environment(synth_dir, monkeypatch):
    monkeypatch.setenv("FMNIST_DATA", str(synth_dir))
    assert fmnist.resolve_data_dir(None) == synth_dir
    assert len(fmnist.load(download=False).test) == 200


def test_offline_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as e:
        fmnist.load(tmp_path / "none", download=True)
    msg = str(e.value)
    assert "\n" not in msg and "download failed" in msg and "train-images-idx3-ubyte.gz" in msg


def _corrupt(folder, key, data: bytes):
    (folder / (FILES[key] + ".gz")).write_bytes(gzip.compress(data))


def _labels(values):
    return struct.pack(">II", 0x801, len(values)) + bytes(values)


def _images(n, h=28, w=28, magic=0x803):
    return struct.pack(">IIII", magic, n, h, w) + bytes(n * h * w)


FAULTS = {
    "missing file": (lambda d: (d / (FILES["test_labels"] + ".gz")).unlink(), "missing t10k-labels"),
    "truncated": (lambda d: _corrupt(d, "train_images", _images(600)[:-100]), "truncated"),
    "wrong magic": (lambda d: _corrupt(d, "train_images", _images(600, magic=0x801)), "wrong magic number"),
    "count mismatch": (lambda d: _corrupt(d, "test_labels", _labels([1] * 199)), "200 images but"),
    "label out of range": (lambda d: _corrupt(d, "test_labels", _labels([3] * 199 + [12])),
                           "label 12 at index 199 is outside 0-9"),
    "not 28x28": (lambda d: _corrupt(d, "test_images", _images(200, 32, 32)), "images are 32x32, expected 28x28"),
    "not gzip": (lambda d: (d / (FILES["train_labels"] + ".gz")).write_bytes(b"plain"), "not a valid gzip"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_input_is_one_line_naming_the_file(fault, synth_dir, tmp_path, capsys):
    folder = tmp_path / "data"
    shutil.copytree(synth_dir, folder)
    damage, expected = FAULTS[fault]
    damage(folder)
    with pytest.raises(DataError) as e:
        fmnist.load(folder, download=False)
    assert expected in str(e.value) and str(folder) in str(e.value)
    code = main(["train", "--preset", "seed004-lenet5", "--data-dir", str(folder), "--no-download", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:") and expected in err[0]
    assert "Traceback" not in capsys.readouterr().err


def test_idx_write_read_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for name in ("a.gz", "b"):
        idx.write(tmp_path / name, images)
        raw = idx.read_raw(tmp_path / name)
        back = idx.parse(tmp_path / name, idx.decompress(tmp_path / name, raw), idx.IMAGES_MAGIC)
        assert np.array_equal(back, images)


def test_stratified_pick_is_seeded_and_proportional():
    labels = np.repeat(np.arange(10), [100, 100, 100, 100, 100, 100, 100, 100, 100, 300])
    a = stratified_pick(labels, 120, seed=3)
    assert np.array_equal(a, stratified_pick(labels, 120, seed=3))
    assert not np.array_equal(a, stratified_pick(labels, 120, seed=4))
    counts = np.bincount(labels[a], minlength=10)
    assert counts.sum() == 120 and counts[9] == 30 and (counts[:9] == 10).all()


def test_splits_are_disjoint_and_validation_ignores_train_subset(synth_dir):
    ds = fmnist.load(synth_dir, download=False)
    full = make_splits(ds, val_size=100, seed=1)
    small = make_splits(ds, val_size=100, seed=1, train_subset=50)
    assert len(full.train) == 500 and len(full.val) == 100 and len(small.train) == 50
    assert (full.val.images == small.val.images).all()
    val_rows = {bytes(r) for r in full.val.images.numpy().reshape(100, -1)}
    assert not any(bytes(r) in val_rows for r in full.train.images.numpy().reshape(500, -1))
    assert np.bincount(full.val.labels.numpy(), minlength=10).tolist() == [10] * 10


@pytest.mark.parametrize("kwargs, option, flag", [
    ({"val_size": 600}, "val_size", "--val-size"),
    ({"val_size": 10, "train_subset": 10_000}, "train_subset", "--train-subset")])
def test_split_sizes_out_of_range_are_named(synth_dir, kwargs, option, flag):
    """The library names its argument; the command line spells it as the flag."""
    ds = fmnist.load(synth_dir, download=False)
    with pytest.raises(fmnist.UsageError, match=f"^{option}: must be between") as caught:
        make_splits(ds, **kwargs)
    assert caught.value.option == option and errors.flag(caught.value).startswith(f"{flag}: must be between")
