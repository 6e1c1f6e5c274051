"""Parameter count and FLOPs from the spec alone, before any model is built or trained.

FLOPs are for one image, forward: 2 x multiply-accumulates of every conv and linear layer (the
convention of torch.utils.flop_counter, which the tests check against). Batch norm, activations
and pooling are left out: they fold into the convs at inference or cost next to nothing.
"""
from __future__ import annotations

from .spec import ArchSpec, conv_out, feature_shapes


def _layers(arch: ArchSpec):
    """(weights, macs) of each layer with parameters; batch norm as (2 x channels, 0)."""
    shapes = feature_shapes(arch)
    if arch.input_bn:
        yield 2, 0
    for block, (cin, side) in zip(arch.convs, shapes):
        if block.reduce:
            yield cin * block.reduce + block.reduce, cin * block.reduce * side * side
            cin = block.reduce
        out_side = conv_out(side, block)
        k2 = block.kernel * block.kernel
        yield cin * block.filters * k2 + block.filters, cin * block.filters * k2 * out_side * out_side
        if block.bn != "off":
            yield 2 * block.filters, 0
    channels, side = shapes[-1]
    width = channels if arch.head == "gap" else channels * side * side
    for layer in arch.dense:
        yield width * layer.units + layer.units, width * layer.units
        if layer.bn != "off":
            yield 2 * layer.units, 0
        width = layer.units
    yield width * arch.num_classes + arch.num_classes, width * arch.num_classes


def param_count(arch: ArchSpec) -> int:
    """Trainable parameters; equals ``sum(p.numel() for p in build(arch).parameters())``."""
    return sum(w for w, _ in _layers(arch))


def flops(arch: ArchSpec) -> int:
    return 2 * sum(m for _, m in _layers(arch))
