"""The seed zoo: the models of the five reference projects in shared/seeds/, by name.

Models a seed describes layer by layer are reproduced exactly: their parameter count equals the
seed's (PyTorch parameters = Keras trainable parameters; a Keras batch norm's moving statistics
are buffers here). Models a seed describes only roughly are fitted to the seed's rounded count
within the family its text describes; ``Preset.gap`` states how far off they are. Dropout rates
and training settings a seed leaves out are our defaults, said in each preset's note.
"""
from __future__ import annotations

from dataclasses import dataclass

from fmnist.errors import SpecError
from fmnist.trainspec import AugmentSpec, TrainSpec

from .count import flops, param_count
from .spec import ArchSpec, ConvBlock, DenseLayer, ModelSpec


@dataclass(frozen=True)
class Preset:
    name: str
    seed: str                    # which file of shared/seeds/ (000 .. 004)
    seed_model: str              # the model's name in that seed
    spec: ModelSpec
    reported_params: int | None  # the seed's own figure; None where it gives none
    exact: bool                  # True: described layer by layer, the count must match exactly
    reported_acc: float | None   # percent, as the seed reports it
    reported_split: str          # what that accuracy was measured on
    note: str = ""

    @property
    def params(self) -> int:
        return param_count(self.spec.arch)

    @property
    def flops(self) -> int:
        return flops(self.spec.arch)

    @property
    def gap(self) -> int | None:
        """Our count minus the seed's; 0 for every exact preset."""
        return None if self.reported_params is None else self.params - self.reported_params


def _c(filters: int, kernel: int = 3, padding: str = "same", **kw) -> ConvBlock:
    return ConvBlock(filters, kernel, padding, **kw)


# Keras' ImageDataGenerator settings of the kind seed 004 names (rotation, zoom, shear, shift).
_SEED004_AUG = AugmentSpec(shift=3, rotate=10.0, zoom=0.1, shear=10.0)
_CNN4_DENSE = (DenseLayer(512, 0.25, bn="after"), DenseLayer(128, 0.25, bn="after"))


def _cnn4(padding: str) -> ArchSpec:
    return ArchSpec(convs=(
        _c(32, padding=padding, bn="after"),
        _c(32, padding=padding, bn="after", pool="max", dropout=0.25),
        _c(64, padding=padding, bn="after", dropout=0.25),
        _c(128, padding=padding, bn="after", pool="max", dropout=0.25),
    ), dense=_CNN4_DENSE)


def _seed000(convs: tuple[ConvBlock, ...], units: int) -> ModelSpec:
    return ModelSpec(ArchSpec(convs=convs, dense=(DenseLayer(units, 0.5),)), TrainSpec(epochs=20))


def _seed001(blocks: tuple[tuple[int, int], ...], units: tuple[int, ...]) -> ModelSpec:
    convs = tuple(_c(f, reduce=r, bn="after", pool="max", dropout=0.25) for f, r in blocks)
    return ModelSpec(ArchSpec(convs=convs, dense=tuple(DenseLayer(u, 0.25) for u in units)),
                     TrainSpec(epochs=30))


_SEED000_NOTE = ("seed 000 gives only the family (conv, 2x2 max pool, one hidden dense layer with "
                 "dropout) and a rounded count; filters, kernel, padding and units fitted to it")
_SEED001_NOTE = ("seed 001 describes the blocks (1x1 reduction, conv, max pool, batch norm, 25% "
                 "dropout) and a count rounded to 0.1M; filters and units fitted to it")

PRESETS: tuple[Preset, ...] = (
    Preset("seed003", "003", "4Conv + 2batch_normalization + 2Pooling + 2FC", ModelSpec(
        ArchSpec(input_bn=True, convs=(
            _c(64), _c(64, pool="max", dropout=0.1), _c(32), _c(32, pool="max", dropout=0.3)),
            dense=(DenseLayer(256, 0.5), DenseLayer(64, bn="after"))),
        TrainSpec(epochs=30)),
        484_172, True, 94.25, "test (10k)",
        "'same' padding is the only reading that gives the seed's count; epochs not stated"),
    Preset("seed004-cnn1", "004", "1 Layer CNN", ModelSpec(
        ArchSpec(convs=(_c(32, padding="valid", pool="max", dropout=0.25),), dense=(DenseLayer(128),)),
        TrainSpec(optimizer="adam", lr=1e-3, batch_size=256, epochs=50, augment=_SEED004_AUG)),
        693_962, True, 91.97, "validation (10k, 1 fold)",
        "the seed's table says 693,932 but its layer listing sums to 693,962; dropout rate not stated"),
    Preset("seed004-lenet5", "004", "LeNet-5", ModelSpec(
        ArchSpec(input_pad=2, convs=(_c(6, 5, pool="max"), _c(16, 5, pool="max")),
                 dense=(DenseLayer(120), DenseLayer(84))),
        TrainSpec(optimizer="adam", lr=1e-3, batch_size=32, epochs=20)),
        136_586, True, 92.11, "validation (10k)", "input padded to 32x32"),
    Preset("seed004-cnn4", "004", "4 Layer CNN", ModelSpec(
        _cnn4("valid"), TrainSpec(optimizer="adam", lr=1e-3, batch_size=256, epochs=50, augment=_SEED004_AUG)),
        1_219_754, True, 92.51, "validation (10k, full data, augmented)", "dropout rates not stated"),
    Preset("seed004-cnn4-same", "004", "4 Layer CNN with padding", ModelSpec(
        _cnn4("same"), TrainSpec(optimizer="adam", lr=1e-3, batch_size=256, epochs=50, augment=_SEED004_AUG)),
        3_382_442, True, 92.51, "validation (10k; the seed's 'best result', attribution unclear)",
        "dropout rates not stated"),
    Preset("seed002", "002", "fashion-mnist CNN", ModelSpec(
        ArchSpec(convs=(_c(32, padding="valid"), _c(64, padding="valid", pool="max", dropout=0.25)),
                 dense=(DenseLayer(400, 0.5),)),
        TrainSpec(optimizer="adam", lr=1e-3, batch_size=64, epochs=20)),
        None, False, 93.0, "validation",
        "seed 002 gives two convs, one max pool, dense 400 and no count; 32/64 3x3 'valid' convs assumed"),
    Preset("seed001-conv2dsimple", "001", "Conv2Dsimple", _seed001(((32, 4),), (64,)),
           400_000, False, 92.8, "test (10k)", _SEED001_NOTE),
    Preset("seed001-conv2dsimple2", "001", "Conv2Dsimple2", _seed001(((16, 8), (48, 8)), (256,)),
           600_000, False, 93.6, "test (10k)", _SEED001_NOTE),
    Preset("seed001-conv2dsimple3", "001", "Conv2Dsimple3", _seed001(((16, 8), (64, 8)), (1536, 512)),
           5_600_000, False, 93.9, "test (10k)", _SEED001_NOTE),
    Preset("seed000-cnn1pooling1fully1-a", "000", "CNN1pooling1fully1_a",
           _seed000((_c(8, pool="max"),), 1024), 1_617_000, False, 90.88, "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn1pooling1fully1-b", "000", "CNN1pooling1fully1_b",
           _seed000((_c(64, pool="max"),), 48), 602_000, False, 87.42, "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn1pooling1fully1-c", "000", "CNN1pooling1fully1_c",
           _seed000((_c(128, 5, pool="max"),), 16), 405_000, False, 91.38, "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn1pooling1fully1-d", "000", "CNN1pooling1fully1_d",
           _seed000((_c(32, pool="max"),), 24), 151_000, False, 88.22, "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn2pooling2fully1-a", "000", "CNN2pooling2fully1_a",
           _seed000((_c(24, 5, pool="max"), _c(24, 5, pool="max")), 80), 110_000, False, 90.74,
           "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn2pooling2fully1-b", "000", "CNN2pooling2fully1_b",
           _seed000((_c(48, pool="max"), _c(48, pool="max")), 24), 78_000, False, 87.28,
           "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn2pooling2fully1-c", "000", "CNN2pooling2fully1_c",
           _seed000((_c(24, 5, "valid", pool="max"), _c(24, 5, "valid", pool="max")), 96), 53_000, False,
           90.64, "test (10k)", _SEED000_NOTE),
    Preset("seed000-cnn2pooling2fully1-d", "000", "CNN2pooling2fully1_d",
           _seed000((_c(16, 5, pool="max"), _c(16, 5, pool="max")), 48), 45_000, False, 87.26,
           "test (10k)", _SEED000_NOTE),
)

_BY_NAME = {p.name: p for p in PRESETS}


def names() -> list[str]:
    return [p.name for p in PRESETS]


def preset(name: str) -> Preset:
    """A seed model by name with what its project reported; an unknown name is a SpecError listing
    the known ones. The one lookup: ``get`` and the reports go through it."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise SpecError(f"unknown preset {name!r} (known: {', '.join(names())})") from None



def get(name: str) -> ModelSpec:
    """``space.zoo.get("seed003")``: the preset's spec, architecture and training settings."""
    return preset(name).spec
