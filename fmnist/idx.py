"""The IDX file format (as published for MNIST and Fashion-MNIST), read with checks and written for tests."""
from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


# The largest IDX content read, compressed or not: the official training images are 47 MB, so
# this bounds the memory a hostile file (a gzip bomb, a huge header) can ask for.
MAX_BYTES = 256 * 2**20


def read_raw(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise DataError(f"{path}: {size:,} bytes; an IDX file read here holds at most {MAX_BYTES:,}")
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def decompress(path: Path, raw: bytes) -> bytes:
    """The IDX content of ``raw``, gunzipped when the file name ends in .gz (at most MAX_BYTES)."""
    if path.suffix != ".gz":
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            content = f.read(MAX_BYTES + 1)  # decompressed as far as needed, no further
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None
    if len(content) > MAX_BYTES:
        raise DataError(f"{path}: decompresses to more than {MAX_BYTES:,} bytes; not a Fashion-MNIST file")
    return content


def parse(path: Path, data: bytes, magic: int) -> np.ndarray:
    """Check the header against ``magic`` and the data length against the header's dimensions."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than the {header}-byte IDX header")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for an IDX {kind} file")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)  # Python integers: a hostile header cannot overflow them
    body = len(data) - header
    if body < expected:
        raise DataError(f"{path}: truncated: header promises {expected} bytes of data for shape "
                        f"{tuple(dims)}, file holds {body}")
    if body > expected:
        raise DataError(f"{path}: {body - expected} unexpected bytes after the data of shape {tuple(dims)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def write(path: Path, array: np.ndarray) -> None:
    """Write uint8 images (N, H, W) or labels (N,) as IDX; gzipped when the name ends in .gz."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
