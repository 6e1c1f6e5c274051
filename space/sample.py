"""The search space: an Optuna-style trial -> ModelSpec.

Takes any object with Optuna's ``suggest_int`` / ``suggest_float`` / ``suggest_categorical`` (it
is duck-typed, so this layer needs no Optuna import). The space is conditional: block ``i``'s
parameters exist only when there are more than ``i`` blocks, and a 1x1 reduction is offered only
from the second block on (before the first it would widen a 1-channel image). Every choice list is
fixed, whatever came before, because TPE needs one distribution per parameter name; a
combination whose feature map shrinks to nothing raises SpecError and the caller skips it.
"""
from __future__ import annotations

from typing import Any

from fmnist.trainspec import AugmentSpec, TrainSpec

from .spec import ArchSpec, ConvBlock, DenseLayer, ModelSpec

MAX_CONVS = 5
MAX_DENSE = 2
FILTERS = (8, 12, 16, 24, 32, 48, 64, 96, 128)
REDUCE = (0, 8, 16, 32)
UNITS = (16, 32, 64, 128, 256, 512)
BATCH_SIZES = (64, 128, 256, 512)


def sample(trial: Any, epochs: int) -> ModelSpec:
    """One candidate from the space; ``epochs`` is the study's budget, not searched."""
    bn = trial.suggest_categorical("bn", ["off", "before", "after"])
    activation = trial.suggest_categorical("activation", ["relu", "gelu", "silu"])
    convs = []
    for i in range(trial.suggest_int("n_convs", 1, MAX_CONVS)):
        convs.append(ConvBlock(
            filters=trial.suggest_categorical(f"conv{i}_filters", FILTERS),
            kernel=trial.suggest_categorical(f"conv{i}_kernel", [3, 5]),
            padding=trial.suggest_categorical(f"conv{i}_padding", ["same", "valid"]),
            reduce=trial.suggest_categorical(f"conv{i}_reduce", REDUCE) if i else 0,
            bn=bn, activation=activation,
            pool=trial.suggest_categorical(f"conv{i}_pool", ["none", "max", "avg"]),
            dropout=trial.suggest_float(f"conv{i}_dropout", 0.0, 0.5, step=0.05)))
    dense = tuple(
        DenseLayer(units=trial.suggest_categorical(f"dense{j}_units", UNITS),
                   dropout=trial.suggest_float(f"dense{j}_dropout", 0.0, 0.5, step=0.05),
                   bn=bn, activation=activation)
        for j in range(trial.suggest_int("n_dense", 0, MAX_DENSE)))
    head = trial.suggest_categorical("head", ["flatten", "gap"])
    affine = trial.suggest_float("aug_affine", 0.0, 1.0, step=0.25)  # one knob: rotation, zoom, shear
    augment = AugmentSpec(
        shift=trial.suggest_int("aug_shift", 0, 3),
        flip=trial.suggest_categorical("aug_flip", [False, True]),
        rotate=10.0 * affine, zoom=0.1 * affine, shear=10.0 * affine,
        erase=trial.suggest_float("aug_erase", 0.0, 0.5, step=0.25))
    optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    train = TrainSpec(
        optimizer=optimizer,
        lr=trial.suggest_float("lr", 3e-4, 1e-2, log=True) * (10 if optimizer == "sgd" else 1),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        epochs=epochs, schedule="onecycle",
        label_smoothing=trial.suggest_categorical("label_smoothing", [0.0, 0.1]),
        augment=augment)
    return ModelSpec(ArchSpec(convs=tuple(convs), dense=dense, head=head), train)
