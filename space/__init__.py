"""The architecture space: specs, the model builder, counts from the spec, the seed zoo.

``build`` loads on first use (PEP 562): specs, counts and the zoo need no torch, so the commands
that only read a study start without it."""
from typing import Any

from fmnist.errors import SpecError
from fmnist.trainspec import AugmentSpec, TrainSpec

from .count import flops, inference_bytes, param_count, pass_flops, training_bytes
from .spec import ArchSpec, ConvBlock, DenseLayer, ModelSpec, summary

__all__ = ["SpecError", "AugmentSpec", "TrainSpec", "build", "flops", "inference_bytes", "param_count", "pass_flops",
           "training_bytes",
           "ArchSpec", "ConvBlock", "DenseLayer", "ModelSpec", "summary"]


def __getattr__(name: str) -> Any:
    if name != "build":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .network import build
    return build
