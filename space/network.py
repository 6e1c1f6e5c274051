"""spec -> nn.Module. Deterministic: the same spec and seed give the same weights.

A network without residual spans is one flat ``nn.Sequential`` (the layout of every weights file
written before residual spans existed). A residual span becomes one ``Residual`` module in that
sequence, holding the span's layers up to the join and its shortcut; what follows the join in its
last block (activation, pool, dropout) stays in the outer sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmnist.data import MEAN, STD

from .count import VIEWS
from .spec import ArchSpec, ConvBlock, Shortcut, feature_shapes, shortcuts

_BLACK = -MEAN / STD  # a black pixel, normalized as the network's input is

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Residual(nn.Module):
    """``body(x) + shortcut(x)``: the shortcut is the identity, or a pool and a 1x1 projection."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Views(nn.Module):
    """Predicting (eval mode): each test-time augmentation view of the batch, one after the other,
    as one batch (``ArchSpec.tta``): the image and its mirror, and for "flip-shift" both moved one
    pixel each way, the edge filled with black as training's shifts fill it."""

    def __init__(self, tta: str):
        super().__init__()
        self.shift = tta == "flip-shift"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x
        views = [x, x.flip(-1)]
        if self.shift:
            h, w = x.shape[-2:]
            pads = [F.pad(v, (1, 1, 1, 1), value=_BLACK) for v in views]
            views += [p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                      for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)) for p in pads]
        return torch.cat(views)


class MeanOfViews(nn.Module):
    """Predicting: the mean of each image's logits over the ``n`` views that ``Views`` made."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x.reshape(self.n, -1, x.shape[-1]).mean(0)


def _norm_act(bn: str, norm: nn.Module, activation: str) -> list[nn.Module]:
    act = _ACTIVATIONS[activation]()
    return {"off": [act], "before": [norm, act], "after": [act, norm]}[bn]


def build(arch: ArchSpec, seed: int = 0) -> nn.Sequential:
    """The network as an nn.Sequential, initialised from ``seed`` without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch)


def _block(block: ConvBlock, cin: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """A conv block's layers up to its join point (a residual span's sum comes right before the
    activation) and those after it."""
    layers: list[nn.Module] = []
    if block.reduce:
        layers += [nn.Conv2d(cin, block.reduce, 1), _ACTIVATIONS[block.activation]()]
        cin = block.reduce
    layers.append(nn.Conv2d(cin, block.filters, block.kernel, padding=block.padding))
    after = _norm_act(block.bn, nn.BatchNorm2d(block.filters), block.activation)
    if block.bn == "before":
        layers.append(after.pop(0))
    if block.pool != "none":
        after.append(_POOLS[block.pool](2))
    if block.dropout:
        after.append(nn.Dropout(block.dropout))
    return layers, after


def _shortcut(span: Shortcut, block: ConvBlock) -> nn.Module:
    if not span.project:
        return nn.Identity()
    layers: list[nn.Module] = [nn.AvgPool2d(span.pool)] if span.pool > 1 else []
    layers.append(nn.Conv2d(span.channels, block.filters, 1))
    if block.bn != "off":
        layers.append(nn.BatchNorm2d(block.filters))
    return nn.Sequential(*layers)


def _build(arch: ArchSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    if arch.input_pad:
        layers.append(nn.ZeroPad2d(arch.input_pad))
    if arch.input_bn:
        layers.append(nn.BatchNorm2d(1))
    shapes = feature_shapes(arch)
    spans = shortcuts(arch)
    starts = {s.first: s for s in spans.values()}
    span_layers: list[nn.Module] | None = None  # the open residual span's body
    for i, (block, (cin, _side)) in enumerate(zip(arch.convs, shapes)):
        if i in starts:
            span_layers = []
        before, after = _block(block, cin)
        if span_layers is None:
            layers += before + after
        elif i in spans:
            layers.append(Residual(nn.Sequential(*span_layers, *before), _shortcut(spans[i], block)))
            layers += after
            span_layers = None
        else:
            span_layers += before + after
    channels, side = shapes[-1]
    if arch.head == "gap":
        layers.append(nn.AdaptiveAvgPool2d(1))
    layers.append(nn.Flatten())
    width = channels if arch.head == "gap" else channels * side * side
    for layer in arch.dense:
        layers.append(nn.Linear(width, layer.units))
        layers += _norm_act(layer.bn, nn.BatchNorm1d(layer.units), layer.activation)
        if layer.dropout:
            layers.append(nn.Dropout(layer.dropout))
        width = layer.units
    layers.append(nn.Linear(width, arch.num_classes))
    return with_tta(nn.Sequential(*layers), arch.tta)


def with_tta(core: nn.Sequential, tta: str) -> nn.Sequential:
    """``core`` (a network without test-time augmentation) predicting with ``tta``; the same
    modules, so weights trained once serve every choice. ``without_tta`` undoes it."""
    return core if tta == "none" else nn.Sequential(Views(tta), *core, MeanOfViews(VIEWS[tta]))


def without_tta(model: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*model[1:-1]) if isinstance(model[0], Views) else model
