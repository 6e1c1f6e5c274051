"""Batched augmentation: shapes, seeding, and that each transform does what it says."""
from __future__ import annotations

import torch

from fmnist import AugmentSpec
from fmnist.augment import augmented_input, random_erase, random_flip, random_shift, to_input


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dots(b=64):
    x = torch.zeros(b, 28, 28)
    x[:, 14, 10] = 1.0
    return x


def test_inactive_spec_is_plain_normalization():
    u8 = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    assert torch.equal(augmented_input(u8, AugmentSpec(), _gen()), to_input(u8))


def test_full_augmentation_is_seeded_and_keeps_shape():
    u8 = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8)
    spec = AugmentSpec(shift=2, flip=True, rotate=15, zoom=0.1, shear=10, erase=0.5)
    a, b = augmented_input(u8, spec, _gen(1)), augmented_input(u8, spec, _gen(1))
    assert a.shape == (16, 1, 28, 28) and torch.equal(a, b)
    assert not torch.equal(a, augmented_input(u8, spec, _gen(2)))


def test_shift_moves_each_image_by_at_most_the_bound_and_differently():
    out = random_shift(_dots(), 3, _gen())
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert ((rows - 14).abs() <= 3).all() and ((cols - 10).abs() <= 3).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10
    assert (out.sum(dim=(1, 2)) == 1).all()  # whole-pixel shifts keep the content


def test_flip_mirrors_about_half_the_batch():
    out = random_flip(_dots(200), _gen())
    flipped = out[:, 14, 17] == 1
    assert 60 < flipped.sum() < 140 and torch.equal(out[~flipped], _dots(200)[~flipped])


def test_erase_blanks_a_rectangle_only_when_drawn():
    x = torch.ones(400, 28, 28)
    out = random_erase(x, 0.5, _gen())
    erased = (out == 0).flatten(1).sum(1)
    hit = erased > 0
    assert 140 < hit.sum() < 260
    frac = erased[hit].float() / 784
    assert frac.min() >= 0.005 and frac.max() <= 0.5


def test_affine_with_zero_strength_is_identity():
    from fmnist.augment import random_affine
    x = torch.rand(4, 28, 28)
    assert torch.allclose(random_affine(x, 0.0, 0.0, 0.0, _gen()), x, atol=1e-5)


def test_augmentation_keeps_each_image_at_its_index_so_labels_stay_with_their_images():
    """Each image holds one bright square whose brightness encodes its label; after shifts, flips
    and erasing (which blanks, never brightens) the brightest pixel of each image still gives it."""
    labels = torch.arange(64) % 10
    u8 = torch.zeros(64, 28, 28, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        u8[i, 4:24, 4:24] = 100 + 15 * label  # 400 pixels: more than one erased rectangle covers
    spec = AugmentSpec(shift=2, flip=True, erase=0.25)
    out = augmented_input(u8, spec, _gen(3)).squeeze(1)
    brightest = out.flatten(1).max(1).values
    decoded = torch.round((brightest * 0.3530 + 0.2860) * 255 - 100) / 15
    assert torch.equal(decoded.long(), labels)
