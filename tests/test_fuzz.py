"""Inputs a user controls, generated: each is accepted or refused with our one-line error type,
never another exception (issue 12). Derandomized: CI sees the same examples every run."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmnist import idx
from fmnist.errors import DataError, UsageError, SpecError
from space import ModelSpec

FIELDS = ["arch", "train", "convs", "dense", "filters", "kernel", "padding", "reduce", "bn", "activation",
          "pool", "dropout", "units", "head", "num_classes", "input_pad", "input_bn", "optimizer", "lr",
          "weight_decay", "momentum", "batch_size", "epochs", "schedule", "label_smoothing", "augment",
          "shift", "flip", "rotate", "zoom", "shear", "erase"]
SCALARS = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["same", "valid", "max", "relu", "gap", "adamw", "onecycle", "after"]) | st.text(max_size=4))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=6), max_leaves=30)
# Mostly the right shape, with any values: reaches the field checks, not only the first type error.
SHAPED = st.fixed_dictionaries({"arch": st.fixed_dictionaries(
    {"convs": st.lists(st.dictionaries(st.sampled_from(FIELDS[4:12]), SCALARS, max_size=8), max_size=4)},
    optional={"dense": st.lists(st.dictionaries(st.sampled_from(["units", "dropout", "bn"]), SCALARS), max_size=3),
              "head": SCALARS, "num_classes": SCALARS, "input_pad": SCALARS}),
    }, optional={"train": st.dictionaries(st.sampled_from(FIELDS[17:]), SCALARS | JSON, max_size=6)})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(JSON, SHAPED))
def test_any_json_is_a_spec_or_one_spec_error(value):
    try:
        spec = ModelSpec.from_json(json.dumps(value))
    except SpecError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert ModelSpec.from_json(spec.to_json()) == spec  # what is accepted round-trips


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=64), st.sampled_from([idx.IMAGES_MAGIC, idx.LABELS_MAGIC]),
       st.lists(st.integers(0, 40), min_size=3, max_size=3), st.integers(-8, 8))
def test_any_idx_header_or_truncation_is_an_array_or_one_data_error(noise, magic, dims, cut):
    dims = dims if magic == idx.IMAGES_MAGIC else dims[:1]  # the dimensions each kind of file declares
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    size = 1
    for d in dims:
        size *= d
    for data in (noise, header + bytes(max(0, size + cut)), header[: max(0, len(header) + cut)]):
        try:
            array = idx.parse(Path("f"), data, magic)
        except DataError as e:
            assert "\n" not in str(e) and str(e).startswith("f: ")
        else:
            assert array.size == size


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.booleans())
def test_any_file_given_to_predict_is_read_or_one_error(tmp_path, content, gz):
    from search.handover.predict import read_inputs
    path = tmp_path / ("x.gz" if gz else "x.png")
    path.write_bytes(gzip.compress(content) if gz else b"\x89PNG\r\n\x1a\n" + content)
    try:
        names, images = read_inputs([path])
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert images.shape[1:] == (28, 28) and len(names) == len(images)
