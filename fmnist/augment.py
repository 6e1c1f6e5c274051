"""Batched, per-sample augmentation on the training device: no per-sample Python.

Works on (B, H, W) float images in [0, 1] before normalization, so that padding, resampling and
erasing fill with the black background of Fashion-MNIST rather than with a normalized grey.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MEAN, STD
from .trainspec import AugmentSpec


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 1, H, W) float, normalized with the dataset's mean and std."""
    return ((images_u8.float() * (1 / 255) - MEAN) * (1 / STD)).unsqueeze(1)


def augmented_input(images_u8: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """(B, H, W) uint8 -> augmented, normalized (B, 1, H, W) float."""
    if not spec.active:
        return to_input(images_u8)
    x = images_u8.float() * (1 / 255)
    if spec.shift:
        x = random_shift(x, spec.shift, gen)
    if spec.flip:
        x = random_flip(x, gen)
    if spec.uses_affine:
        x = random_affine(x, spec.rotate, spec.zoom, spec.shear, gen)
    if spec.erase:
        x = random_erase(x, spec.erase, gen)
    return ((x - MEAN) * (1 / STD)).unsqueeze(1)


def _uniform(n: int, bound: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """n values uniform in [-bound, bound]."""
    return (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * bound


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` whole pixels: pad, then gather a shifted crop."""
    b, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b, 1, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b, 1, 1), device=x.device, generator=gen)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
    return padded[torch.arange(b, device=x.device).view(b, 1, 1), rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1), x.flip(-1), x)


def random_affine(x: torch.Tensor, rotate: float, zoom: float, shear: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Rotation, zoom and shear as one sampling grid per image: a single grid_sample for the batch."""
    b = x.shape[0]
    angle = _uniform(b, math.radians(rotate), x, gen)
    scale = 1 + _uniform(b, zoom, x, gen)
    tan_shear = torch.tan(_uniform(b, math.radians(shear), x, gen))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input coordinates: rotation @ shear, divided by the zoom factor.
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (cos * tan_shear - sin) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (sin * tan_shear + cos) / scale
    grid = F.affine_grid(theta, (b, 1, *x.shape[1:]), align_corners=False)
    return F.grid_sample(x.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).squeeze(1)


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, blank one rectangle of 2-33% of the area, aspect 0.3-3.3."""
    b, h, w = x.shape
    dev = x.device
    area = (0.02 + torch.rand(b, device=dev, generator=gen) * 0.31) * h * w
    log_ratio = math.log(0.3) + torch.rand(b, device=dev, generator=gen) * (math.log(3.3) - math.log(0.3))
    ratio = torch.exp(log_ratio)
    eh = torch.sqrt(area * ratio).round().clamp(1, h).long()
    ew = torch.sqrt(area / ratio).round().clamp(1, w).long()
    y0 = (torch.rand(b, device=dev, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(b, device=dev, generator=gen) * (w - ew + 1)).long()
    apply = torch.rand(b, device=dev, generator=gen) < p
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    mask = ((rows >= y0.view(b, 1, 1)) & (rows < (y0 + eh).view(b, 1, 1))
            & (cols >= x0.view(b, 1, 1)) & (cols < (x0 + ew).view(b, 1, 1)) & apply.view(b, 1, 1))
    return x.masked_fill(mask, 0.0)
