"""The architecture space: specs, the model builder, counts from the spec, the seed zoo."""
from fmnist.errors import SpecError
from fmnist.trainspec import AugmentSpec, TrainSpec

from .build import build
from .count import flops, inference_bytes, param_count, pass_flops, training_bytes
from .spec import ArchSpec, ConvBlock, DenseLayer, ModelSpec, summary

__all__ = ["SpecError", "AugmentSpec", "TrainSpec", "build", "flops", "inference_bytes", "param_count", "pass_flops",
           "training_bytes",
           "ArchSpec", "ConvBlock", "DenseLayer", "ModelSpec", "summary"]
