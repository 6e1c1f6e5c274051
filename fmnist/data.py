"""Fashion-MNIST on disk -> uint8 tensors, and the seeded stratified train/validation split.

Selection uses the validation split carved from the 60k training images; the test set is only
ever reported. The whole set is 47 MB as uint8, so it is moved to the training device once and
batches are slices of it (see ``fmnist.trainer``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import idx
from .errors import DataError, UsageError, first_line

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # of the official training images, pixel values scaled to [0, 1]
IMAGE_SIZE = 28
MIN_TRAIN = 2  # batch norm needs two images in a batch

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# md5 of each official file, gzipped as published and uncompressed.
OFFICIAL_MD5 = {
    "train_images": {"8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"},
    "train_labels": {"25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"},
    "test_images": {"bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"},
    "test_labels": {"bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"},
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$FMNIST_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get("FMNIST_DATA") or "data")


def find_files(root: Path) -> dict[str, Path] | None:
    """The four files in ``root`` or torchvision's ``root/FashionMNIST/raw``; None when absent.

    A folder holding some but not all of them is an error naming what is missing.
    """
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FILES.items():
            for name in (stem + ".gz", stem):
                if (folder / name).is_file():
                    found[key] = folder / name
                    break
        if len(found) == len(FILES):
            return found
        if found:
            missing = [FILES[k] for k in FILES if k not in found]
            raise DataError(f"{folder}: missing {', '.join(missing)} (.gz or uncompressed)")
    return None


@dataclass
class Split:
    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, index: np.ndarray) -> "Split":
        index_t = torch.as_tensor(index, dtype=torch.long, device=self.labels.device)
        return Split(self.images[index_t], self.labels[index_t])


@dataclass
class FashionMNIST:
    train: Split
    test: Split
    folder: Path
    official: bool
    notices: list[str] = field(default_factory=list)


def load(data_dir: str | os.PathLike | None = None, download: bool = True) -> FashionMNIST:
    """Read the four IDX files (``.gz`` or raw), checking every fault a user can meet."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file, expected a folder holding the Fashion-MNIST files")
    files = find_files(root)
    if files is None and download:
        files = _download(root)
    if files is None:
        raise DataError(_where_to_put_files(root, "download disabled"), "data_dir")
    arrays, unofficial = {}, []
    for key, path in files.items():
        raw = idx.read_raw(path)
        if hashlib.md5(raw).hexdigest() not in OFFICIAL_MD5[key]:
            unofficial.append(path.name)
        magic = idx.IMAGES_MAGIC if key.endswith("images") else idx.LABELS_MAGIC
        arrays[key] = idx.parse(path, idx.decompress(path, raw), magic)
    train = _checked_split(arrays, files, "train")
    test = _checked_split(arrays, files, "test")
    folder = files["train_images"].parent
    notices = [f"notice: {', '.join(unofficial)} in {folder} are not the official Fashion-MNIST files "
               f"(md5 differs); loading them anyway"] if unofficial else []
    return FashionMNIST(train, test, folder, not unofficial, notices)


def _checked_split(arrays: dict[str, np.ndarray], files: dict[str, Path], part: str) -> Split:
    images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
    image_file, label_file = files[f"{part}_images"], files[f"{part}_labels"]
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{image_file}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if len(images) != len(labels):
        raise DataError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{label_file}: holds no labels")
    bad = np.flatnonzero(labels > 9)
    if len(bad):
        raise DataError(f"{label_file}: label {labels[bad[0]]} at index {bad[0]} is outside 0-9")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def _where_to_put_files(root: Path, why: str) -> str:
    names = ", ".join(s + ".gz" for s in FILES.values())
    return (f"Fashion-MNIST not found in {root} ({why}); put {names} (or uncompressed) in {root} "
            f"or {root / 'FashionMNIST' / 'raw'}, or point FMNIST_DATA at their folder")


def _download(root: Path) -> dict[str, Path] | None:
    """torchvision's downloader, which checks each file's md5; offline it fails with a clear line,
    and the folders it made for the files are removed again (a refused command leaves nothing)."""
    made = [p for p in (root, root / "FashionMNIST", root / "FashionMNIST" / "raw") if not p.exists()]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a blocked network should fail, not hang
    try:
        import torchvision
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
    except BaseException as e:  # any failure here means: no files, tell the user where to put them
        if made:  # only folders this call created, with what the download put in them
            shutil.rmtree(made[0], ignore_errors=True)
        if not isinstance(e, Exception):
            raise
        raise DataError(_where_to_put_files(root, f"download failed: {first_line(e)}"), "data_dir") from None
    finally:
        socket.setdefaulttimeout(previous)
    return find_files(root)


def stratified_pick(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices drawn per class in proportion to the class sizes (largest remainder), sorted."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> "Splits":
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))

    def val_subset(self, n: int, seed: int = 0) -> Split:
        """A fixed stratified subset of ``n`` validation images (all of them if there are fewer):
        the same images for every trial, so a decision between trials compares like with like."""
        if n >= len(self.val):
            return self.val
        labels = self.val.labels.cpu().numpy()
        return self.val.subset(stratified_pick(labels, n, seed))


def make_splits(ds: FashionMNIST, val_size: int = 10_000, seed: int = 0,
                train_subset: int | None = None) -> Splits:
    """Seeded stratified validation split of the training images; optionally a smaller training set.

    The same ``seed`` and ``val_size`` give the same validation images whatever ``train_subset`` is,
    so trials trained on subsets are compared on the same validation set.
    """
    n = len(ds.train)
    if not 0 <= val_size < n:
        raise UsageError(f"must be between 0 and {n - 1} (the training images), got {val_size}", "val_size")
    labels = ds.train.labels.numpy()
    val_idx = stratified_pick(labels, val_size, seed) if val_size else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    if len(train_idx) < MIN_TRAIN:
        raise UsageError(f"{val_size} leaves {len(train_idx)} training image(s); training needs at least "
                         f"{MIN_TRAIN} (batch norm normalizes over a batch)", "val_size")
    if train_subset is not None:
        if not MIN_TRAIN <= train_subset <= len(train_idx):
            raise UsageError(f"must be between {MIN_TRAIN} and {len(train_idx)} (at least {MIN_TRAIN}: batch norm "
                             f"normalizes over a batch), got {train_subset}", "train_subset")
        train_idx = train_idx[stratified_pick(labels[train_idx], train_subset, seed + 1)]
    return Splits(ds.train.subset(train_idx), ds.train.subset(val_idx), ds.test)
