"""Small synthetic Fashion-MNIST look-alikes in IDX format, learnable in a few epochs by tiny nets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist import idx
from fmnist.data import FILES


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class is a bright horizontal band at its own height, plus noise and a random shift."""
    n = len(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.int64)
    rows = 3 + 2 * labels + rng.integers(-1, 2, size=n)
    for offset in (0, 1):
        images[np.arange(n), rows + offset, 4:24] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def write_dataset(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0,
                  gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = np.arange(n_train) % 10
    test_labels = np.arange(n_test) % 10
    rng.shuffle(train_labels)
    arrays = {"train_images": make_images(train_labels, rng), "train_labels": train_labels,
              "test_images": make_images(test_labels, rng), "test_labels": test_labels}
    suffix = ".gz" if gz else ""
    for key, stem in FILES.items():
        idx.write(folder / (stem + suffix), arrays[key])
    return folder
