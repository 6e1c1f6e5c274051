"""The devices and precisions the trainer accepts, as names: checked on the command line without
importing torch (``pick_device`` and ``pick_precision`` in ``trainer`` turn them into torch's)."""
from __future__ import annotations

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


def device_name(name: str) -> str:
    """``name`` if it names a device: auto, cpu, cuda, or cuda:K for the K-th GPU (whether that
    device exists here is ``pick_device``'s to say)."""
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"must be one of {', '.join(DEVICES)} or cuda:K, got {name!r}", "device")
    return name
