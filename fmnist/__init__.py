"""Fashion-MNIST data and the trainer. The bottom layer: imports nothing from ``space`` or ``search``."""
from .data import CLASSES, FashionMNIST, Split, Splits, load, make_splits, resolve_data_dir
from .errors import DataError, UsageError, SpecError
from .train import (Report, TrainResult, accuracy, available_memory, latency_ms, pick_device, pick_precision,
                    predict, train)
from .trainspec import AugmentSpec, TrainSpec

__all__ = [
    "CLASSES", "FashionMNIST", "Split", "Splits", "load", "make_splits", "resolve_data_dir",
    "DataError", "UsageError", "SpecError",
    "Report", "TrainResult", "accuracy", "available_memory", "latency_ms", "pick_device", "pick_precision", "predict", "train",
    "AugmentSpec", "TrainSpec",
]
