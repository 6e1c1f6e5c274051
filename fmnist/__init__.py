"""Fashion-MNIST data and the trainer. The bottom layer: imports nothing from ``space`` or ``search``.

Its names load on first use (PEP 562), so that ``fmnist.errors`` and the storage-only parts of
``search`` that use it start without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "data": ("CLASSES", "FashionMNIST", "Split", "Splits", "load", "make_splits", "resolve_data_dir"),
    "errors": ("DataError", "UsageError", "SpecError"),
    "trainer": ("Report", "TrainResult", "accuracy", "available_memory", "latency_ms", "pick_device", "pick_precision",
                "predict", "train", "train_images"),
    "trainspec": ("AugmentSpec", "TrainSpec"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
