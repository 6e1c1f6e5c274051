"""Training settings: what the trainer needs to know besides the model. Frozen, JSON round-trip."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import specio
from .specio import check_bool, check_choice, check_float, check_int

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass(frozen=True)
class AugmentSpec:
    """Per-sample augmentation, done batched on the training device. Zero/False means off."""

    shift: int = 0          # random translation in whole pixels (pad + crop), up to this many
    flip: bool = False      # random horizontal flip
    rotate: float = 0.0     # degrees, uniform in [-rotate, rotate]
    zoom: float = 0.0       # scale uniform in [1 - zoom, 1 + zoom]
    shear: float = 0.0      # degrees, uniform in [-shear, shear]
    erase: float = 0.0      # probability of one random-erasing rectangle per image

    def __post_init__(self) -> None:
        check_int("shift", self.shift, 0, 8)
        check_bool("flip", self.flip)
        check_float("rotate", self.rotate, 0.0, 45.0)
        check_float("zoom", self.zoom, 0.0, 0.5)
        check_float("shear", self.shear, 0.0, 45.0)
        check_float("erase", self.erase, 0.0, 1.0)

    @property
    def uses_affine(self) -> bool:
        return bool(self.rotate or self.zoom or self.shear)

    @property
    def active(self) -> bool:
        return bool(self.shift or self.flip or self.uses_affine or self.erase)


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9          # SGD only
    batch_size: int = 256
    epochs: int = 10
    schedule: str = "onecycle"     # warm-up then cosine decay; "cosine" has no warm-up
    label_smoothing: float = 0.0
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_float("weight_decay", self.weight_decay, 0.0, 1.0)
        check_float("momentum", self.momentum, 0.0, 1.0)
        check_int("batch_size", self.batch_size, 1, 65536)
        check_int("epochs", self.epochs, 1, 10000)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_float("label_smoothing", self.label_smoothing, 0.0, 0.5)
        if not isinstance(self.augment, AugmentSpec):
            raise specio.SpecError(f"augment: expected an AugmentSpec, got {self.augment!r}")

    def to_json(self) -> str:
        return specio.to_json(self)

    @classmethod
    def from_json(cls, text: str) -> "TrainSpec":
        return specio.from_json(cls, text)
