"""``predict``: an exported model folder classifies image files or an IDX file."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fmnist import idx
from fmnist.data import IMAGE_SIZE
from fmnist.errors import UsageError, first_line
from space import ModelSpec, build, param_count

from search.loop.trial import too_big
from search.study.artifacts import read_state_dict

# The largest image decoded: a 40-megapixel photo. Larger ones (or a few kB of PNG that claims
# a huge canvas) are refused before any pixel is decoded.
MAX_PIXELS = 40_000_000


def load_model(folder: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
    """spec.json + weights.pt of an exported model, in eval mode, and the largest batch (up to
    2,000 images) that fits in the memory free on ``device``: checked from the spec before anything
    is built. Every fault names the file."""
    spec_path, weights_path = folder / "spec.json", folder / "weights.pt"
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise UsageError(f"--model {folder}: no {path.name} (expected a folder written by export-best)")
    spec = ModelSpec.from_file(spec_path)
    big = too_big(spec.arch, 1, device, training=False)
    if big:
        raise UsageError(f"{spec_path}: too large to run here: {big}")
    batch = 2000
    while batch > 1 and too_big(spec.arch, batch, device, training=False):
        batch //= 2
    model = build(spec.arch)
    # float32 weights and batch-norm statistics (at most as many again), and the archive's own bytes
    most = 8 * param_count(spec.arch) + (1 << 20)
    try:
        model.load_state_dict(read_state_dict(weights_path, most))
    except RuntimeError as e:
        raise UsageError(f"{weights_path}: weights do not fit {spec_path.name} "
                          f"({first_line(e)})") from None
    return model.eval(), batch


def to_dataset_image(img) -> np.ndarray:
    """Any PIL image -> 28x28 uint8, light object on a dark background like Fashion-MNIST."""
    from PIL import Image, ImageOps
    gray = ImageOps.exif_transpose(img).convert("L")
    a = np.asarray(gray)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if border.mean() > 127:  # a photo on a light background: flip to the dataset's polarity
        gray = ImageOps.invert(gray)
    gray.thumbnail((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    canvas.paste(gray, ((IMAGE_SIZE - gray.width) // 2, (IMAGE_SIZE - gray.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def read_inputs(paths: Sequence[Path]) -> tuple[list[str], torch.Tensor]:
    """(names, (N, 28, 28) uint8): each path an image file or an IDX images file (all its images)."""
    from PIL import Image, UnidentifiedImageError
    names, arrays = [], []
    for path in paths:
        raw = idx.read_raw(path)
        content = idx.decompress(path, raw)
        if content[:4] == struct.pack(">I", idx.IMAGES_MAGIC):
            images = idx.parse(path, content, idx.IMAGES_MAGIC)
            if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise UsageError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
            names += [f"{path}[{i}]" for i in range(len(images))]
            arrays.append(images)
            continue
        try:
            with Image.open(path) as img:  # reads the header only
                if img.width * img.height > MAX_PIXELS:
                    raise UsageError(f"{path}: {img.width}x{img.height} pixels; images of at most "
                                     f"{MAX_PIXELS // 1_000_000} megapixels are read")
                img.draft("L", (8 * IMAGE_SIZE, 8 * IMAGE_SIZE))  # a JPEG decodes at a reduced size
                img.load()
                arrays.append(to_dataset_image(img)[None])
        except Image.DecompressionBombError as e:
            raise UsageError(f"{path}: image too large to read safely ({e})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise UsageError(f"{path}: cannot decode as an image ({first_line(e)})") from None
        names.append(str(path))
    return names, torch.from_numpy(np.concatenate(arrays))
