"""Parameter count and FLOPs from the spec alone, before any model is built or trained.

FLOPs are for one image, forward, as the model predicts (one pass per test-time augmentation
view: 2 with flips, 10 with flips and shifts; ``pass_flops`` is one pass, what training pays): 2 x multiply-accumulates of every
conv and linear layer (the convention of torch.utils.flop_counter, which the tests check against). Batch norm, activations
and pooling are left out: they fold into the convs at inference or cost next to nothing.
"""
from __future__ import annotations

from .spec import ArchSpec, conv_out, feature_shapes, shortcuts

VIEWS = {"none": 1, "flip": 2, "flip-shift": 10}  # forward passes an image, by ArchSpec.tta


def _layers(arch: ArchSpec):
    """(weights, macs) of each layer with parameters; batch norm as (2 x channels, 0)."""
    shapes = feature_shapes(arch)
    spans = shortcuts(arch)
    if arch.input_bn:
        yield 2, 0
    for i, (block, (cin, side)) in enumerate(zip(arch.convs, shapes)):
        if block.reduce:
            yield cin * block.reduce + block.reduce, cin * block.reduce * side * side
            cin = block.reduce
        out_side = conv_out(side, block)
        k2 = block.kernel * block.kernel
        yield cin * block.filters * k2 + block.filters, cin * block.filters * k2 * out_side * out_side
        if block.bn != "off":
            yield 2 * block.filters, 0
        span = spans.get(i)
        if span is not None and span.project:  # 1x1 conv (+ batch norm) on the pooled shortcut
            yield span.channels * block.filters + block.filters, span.channels * block.filters * out_side * out_side
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


def pass_flops(arch: ArchSpec) -> int:
    """One forward pass of one image: what a training step costs per image, forward."""
    return 2 * sum(m for _, m in _layers(arch))


def passes(arch: ArchSpec) -> int:
    """Forward passes per image when the model predicts."""
    return VIEWS[arch.tta]


def flops(arch: ArchSpec) -> int:
    """One prediction of one image."""
    return passes(arch) * pass_flops(arch)


def activations(arch: ArchSpec) -> int:
    """Activation values one image keeps for the backward pass: the output of every conv, norm,
    activation, pool and linear layer (an upper bound: some are freed or fused)."""
    shapes = feature_shapes(arch)
    spans = shortcuts(arch)
    total = shapes[0][0] * shapes[0][1] ** 2
    for i, (block, (cin, side)) in enumerate(zip(arch.convs, shapes)):
        if block.reduce:
            total += 2 * block.reduce * side * side  # conv, activation
        out_side = conv_out(side, block)
        total += (2 + (block.bn != "off") + bool(block.dropout)) * block.filters * out_side * out_side
        if i in spans:  # the sum, and the projection's pool, conv and norm
            total += (1 + 3 * spans[i].project) * block.filters * out_side * out_side
        if block.pool != "none":
            total += block.filters * (out_side // 2) ** 2
    for layer in arch.dense:
        total += (2 + (layer.bn != "off") + bool(layer.dropout)) * layer.units
    return total + arch.num_classes


def training_bytes(arch: ArchSpec, batch_size: int) -> int:
    """Memory to train ``arch`` at ``batch_size``, estimated from the spec in fp32: weights,
    gradients and two optimizer moments (4 copies of the parameters), and the activations of a
    batch kept for the backward pass, with their gradients (twice)."""
    return 4 * (4 * param_count(arch) + 2 * batch_size * activations(arch))


def inference_bytes(arch: ArchSpec, batch_size: int) -> int:
    """Memory to run ``arch`` on a batch in fp32, from the spec: the weights, and a batch's
    activations (an upper bound: without gradients most are freed as the forward pass goes); flip
    test-time augmentation runs the batch and its mirror together."""
    return 4 * (param_count(arch) + passes(arch) * batch_size * activations(arch))
