"""Architecture specs: frozen dataclasses, validated on construction, JSON round-trip.

A ``ModelSpec`` is what a search trial or a preset is: an ``ArchSpec`` (the network) and a
``TrainSpec`` (how to train it). The same spec always builds the same model (``space.build``,
in ``space.network``), and its parameter count and FLOPs follow from the spec alone (``space.count``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fmnist import specio
from fmnist.errors import SpecError
from fmnist.specio import check_bool, check_choice, check_float, check_int
from fmnist.trainspec import TrainSpec

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "elu")
BN_PLACES = ("off", "before", "after")   # batch norm before or after the activation
PADDINGS = ("same", "valid")
POOLS = ("none", "max", "avg")           # 2x2, stride 2, floor (as Keras and PyTorch default)
HEADS = ("flatten", "gap")               # flatten the feature map, or global average pooling
# Test-time augmentation: none; the mean over the image and its mirror; or over those and each
# moved one pixel left, right, up and down (10 views): see ArchSpec and space.network.
TTAS = ("none", "flip", "flip-shift")
# Bounds on what a spec may hold, so that a hostile spec file cannot ask for an unbounded network.
MAX_CONVS, MAX_DENSE = 64, 16


@dataclass(frozen=True)
class ConvBlock:
    """[1x1 reduction conv + activation] -> conv -> batch norm / activation -> pool -> dropout.

    ``skip`` > 0 makes the block the end of a residual span of ``skip`` blocks (this one and the
    ``skip - 1`` before it, as a ResNet basic block spans 2): the span's input is added to this
    block's conv output right before its activation (after its batch norm when that comes
    first: conv-BN-add-ReLU). The shortcut is the identity where the shapes match, else a
    projection: an average pool where the span halved the side, then a 1x1 conv (and a batch
    norm when the block has one) to this block's width."""
    filters: int
    kernel: int = 3
    padding: str = "same"
    reduce: int = 0          # channels of a 1x1 "network in network" conv before this one; 0 = none
    bn: str = "off"
    activation: str = "relu"
    pool: str = "none"
    dropout: float = 0.0
    skip: int = 0            # blocks spanned by a shortcut ending here; 0 = none

    def __post_init__(self) -> None:
        check_int("filters", self.filters, 1, 4096)
        check_int("kernel", self.kernel, 1, 11)
        check_choice("padding", self.padding, PADDINGS)
        check_int("reduce", self.reduce, 0, 4096)
        check_choice("bn", self.bn, BN_PLACES)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("pool", self.pool, POOLS)
        check_float("dropout", self.dropout, 0.0, 0.95)
        check_int("skip", self.skip, 0, MAX_CONVS)


@dataclass(frozen=True)
class DenseLayer:
    """Linear -> batch norm / activation -> dropout."""
    units: int
    dropout: float = 0.0
    bn: str = "off"
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_int("units", self.units, 1, 65536)
        check_float("dropout", self.dropout, 0.0, 0.95)
        check_choice("bn", self.bn, BN_PLACES)
        check_choice("activation", self.activation, ACTIVATIONS)


@dataclass(frozen=True)
class ArchSpec:
    """The network: optional input padding and batch norm, conv blocks, head, dense layers, output.

    ``tta="flip"`` makes the network, when it predicts (eval mode), average its logits over each
    image and its left-right mirror: two passes per image, the same weights. It is part of the
    architecture rather than of the evaluation so that every figure, the FLOPs and every exported
    file (ONNX, TorchScript, torch.export) carry it alike; training (train mode) sees one pass.
    ``tta="flip-shift"`` averages over 10 views: the image and its mirror, each as it is and moved
    one pixel in each of the four directions (black fills the edge, as in training's shifts)."""
    convs: tuple[ConvBlock, ...]
    dense: tuple[DenseLayer, ...] = ()
    input_pad: int = 0        # zero padding around the 28x28 input (LeNet-5 wants 32x32)
    input_bn: bool = False    # batch norm on the input image (seed 003 starts with one)
    head: str = "flatten"
    num_classes: int = 10
    tta: str = "none"

    def __post_init__(self) -> None:
        for name, items, cls, most in (("convs", self.convs, ConvBlock, MAX_CONVS),
                                       ("dense", self.dense, DenseLayer, MAX_DENSE)):
            if not isinstance(items, tuple):
                raise SpecError(f"{name}: expected a tuple of {cls.__name__}, got {type(items).__name__}")
            if len(items) > most:
                raise SpecError(f"{name}: {len(items)} layers; at most {most}")
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise SpecError(f"{name}[{i}]: expected a {cls.__name__}, got {item!r}")
        check_int("input_pad", self.input_pad, 0, 16)
        check_bool("input_bn", self.input_bn)
        check_choice("head", self.head, HEADS)
        check_int("num_classes", self.num_classes, 2, 1000)
        check_choice("tta", self.tta, TTAS)
        shortcuts(self)  # raises, naming the block, when the spatial size reaches zero or a skip cannot join

    def to_json(self, compact: bool = False) -> str:
        return specio.to_json(self, compact)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        return specio.from_json(cls, text)


def conv_out(size: int, block: ConvBlock) -> int:
    return size if block.padding == "same" else size - block.kernel + 1


def feature_shapes(arch: ArchSpec, image_size: int = 28) -> list[tuple[int, int]]:
    """(channels, side) entering each conv block, then after the last; errors name the block."""
    channels, side = 1, image_size + 2 * arch.input_pad
    shapes = [(channels, side)]
    for i, block in enumerate(arch.convs):
        after_conv = conv_out(side, block)
        if after_conv < 1:
            raise SpecError(f"convs[{i}].kernel: a {block.kernel}x{block.kernel} 'valid' conv on a "
                            f"{side}x{side} feature map leaves nothing (spatial size reaches zero)")
        side = after_conv // 2 if block.pool != "none" else after_conv
        if side < 1:
            raise SpecError(f"convs[{i}].pool: pooling a {after_conv}x{after_conv} feature map "
                            f"leaves nothing (spatial size reaches zero)")
        channels = block.filters
        shapes.append((channels, side))
    return shapes


@dataclass(frozen=True)
class Shortcut:
    """A residual span ``first``..``last`` (block indices) and how its input reaches the join."""
    first: int
    last: int
    channels: int   # entering the span
    side: int       # entering the span
    pool: int       # average-pool factor bringing ``side`` to the join's side (1: none)
    project: bool   # a 1x1 conv to the last block's width (the shapes differ)


def shortcuts(arch: ArchSpec) -> dict[int, Shortcut]:
    """Each residual span by its last block; errors name the block whose shortcut cannot join."""
    shapes = feature_shapes(arch)
    spans: dict[int, Shortcut] = {}
    covered = -1  # spans may follow each other, not overlap or nest
    for i, block in enumerate(arch.convs):
        if not block.skip:
            continue
        first = i - block.skip + 1
        if first < 0:
            raise SpecError(f"convs[{i}].skip: spans {block.skip} blocks, but only {i + 1} come up to here")
        if first <= covered:
            raise SpecError(f"convs[{i}].skip: overlaps the shortcut ending at convs[{covered}]")
        channels, side = shapes[first]
        join = conv_out(shapes[i][1], block)
        pool = 1
        while side // pool > join and pool < side:
            pool *= 2
        if side // pool != join:
            raise SpecError(f"convs[{i}].skip: the shortcut from convs[{first}]'s {side}x{side} input cannot "
                            f"be pooled to the {join}x{join} map it joins ('valid' padding in the span?)")
        spans[i] = Shortcut(first, i, channels, side, pool, project=channels != block.filters or pool > 1)
        covered = i
    return spans


def summary(arch: ArchSpec) -> str:
    """The network in one token a person can read: ``3x3x32+3x3x32+max>1x1x16+3x3x64+max>gap>fc64>10``
    (``+`` joins a stage's layers, ``>`` the stages, ``[...]`` a residual span; input padding,
    dropout, batch norm, activations other than relu and test-time augmentation after a ``;``). No spaces, so that a table cell holds it on one line."""
    parts = [f"pad{arch.input_pad}"] if arch.input_pad else []
    parts += ["bn"] if arch.input_bn else []
    stage: list[str] = []
    starts = {s.first for s in shortcuts(arch).values()}
    for i, block in enumerate(arch.convs):
        if block.reduce:
            stage.append(f"1x1x{block.reduce}")
        layer = f"{block.kernel}x{block.kernel}x{block.filters}" + ("_valid" if block.padding == "valid" else "")
        # [ ... ] marks a residual span: its input is added where it closes
        stage.append(("[" if i in starts else "") + layer + ("]" if block.skip else ""))
        if block.pool != "none":
            parts.append("+".join(stage + [block.pool]))
            stage = []
    if stage:
        parts.append("+".join(stage))
    if arch.head == "gap":
        parts.append("gap")
    parts += [f"fc{d.units}" for d in arch.dense] + [str(arch.num_classes)]
    layers = [*arch.convs, *arch.dense]
    notes = []
    drops = sorted({x.dropout for x in layers if x.dropout})
    if drops:
        notes.append("dropout" + "/".join(f"{d:g}" for d in drops))
    bns = sorted({x.bn for x in layers if x.bn != "off"})
    if bns:
        notes.append("bn_" + "/".join(bns) + "_act")
    acts = sorted({x.activation for x in layers})
    if acts != ["relu"]:
        notes.append("/".join(acts))
    if arch.tta != "none":
        notes.append(f"{arch.tta}_tta")
    return ">".join(parts) + (";" + ";".join(notes) if notes else "")


def tta_choices(train: TrainSpec) -> tuple[str, ...]:
    """The test-time augmentations a net trained with ``train`` can use: views like those it was
    trained on. A net trained without flips has never seen a mirrored garment (measured: 7-9
    points lost with flip TTA on two such nets); shifted views need training shifts too."""
    aug = train.augment
    return ("none",) + (("flip",) if aug.flip else ()) + (("flip-shift",) if aug.flip and aug.shift else ())


@dataclass(frozen=True)
class ModelSpec:
    """One candidate: the architecture and its training settings. The unit of presets and trials."""
    arch: ArchSpec
    train: TrainSpec = field(default_factory=TrainSpec)

    def __post_init__(self) -> None:
        if not isinstance(self.arch, ArchSpec):
            raise SpecError(f"arch: expected an ArchSpec, got {self.arch!r}")
        if not isinstance(self.train, TrainSpec):
            raise SpecError(f"train: expected a TrainSpec, got {self.train!r}")

    def to_json(self, compact: bool = False) -> str:
        return specio.to_json(self, compact)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return specio.from_json(cls, text)

    @classmethod
    def from_file(cls, path: Path) -> "ModelSpec":
        """A spec JSON file; every fault (unreadable, not JSON, invalid field) names the file."""
        try:
            if Path(path).stat().st_size > specio.MAX_JSON_CHARS * 4:
                raise SpecError(f"{path}: {Path(path).stat().st_size:,} bytes; not a spec (at most "
                                f"{specio.MAX_JSON_CHARS:,} characters)")
            text = Path(path).read_text()
        except OSError as e:
            raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise SpecError(f"{path}: not a text file (a spec is JSON)") from None
        try:
            return cls.from_json(text)
        except SpecError as e:
            raise SpecError(f"{path}: {e}") from None
