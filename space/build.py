"""spec -> nn.Module. Deterministic: the same spec and seed give the same weights."""
from __future__ import annotations

import torch
from torch import nn

from .spec import ArchSpec, feature_shapes

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _norm_act(bn: str, norm: nn.Module, activation: str) -> list[nn.Module]:
    act = _ACTIVATIONS[activation]()
    return {"off": [act], "before": [norm, act], "after": [act, norm]}[bn]


def build(arch: ArchSpec, seed: int = 0) -> nn.Sequential:
    """The network as one flat nn.Sequential, initialised from ``seed`` without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch)


def _build(arch: ArchSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    if arch.input_pad:
        layers.append(nn.ZeroPad2d(arch.input_pad))
    if arch.input_bn:
        layers.append(nn.BatchNorm2d(1))
    shapes = feature_shapes(arch)
    for block, (cin, _side) in zip(arch.convs, shapes):
        if block.reduce:
            layers += [nn.Conv2d(cin, block.reduce, 1), _ACTIVATIONS[block.activation]()]
            cin = block.reduce
        layers.append(nn.Conv2d(cin, block.filters, block.kernel, padding=block.padding))
        layers += _norm_act(block.bn, nn.BatchNorm2d(block.filters), block.activation)
        if block.pool != "none":
            layers.append(_POOLS[block.pool](2))
        if block.dropout:
            layers.append(nn.Dropout(block.dropout))
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
    return nn.Sequential(*layers)
