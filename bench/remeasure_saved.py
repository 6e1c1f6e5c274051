"""Re-measure ``fmnist-search train --save`` folders from their files: the spec's model with the
saved weights, written to ONNX by the exporter's own ``write_model_files`` (into FOLDER-onnx/, made
once) and run with onnxruntime in fp32 on the real test set; with flip TTA, the same weights
without it beside. Then the mean and spread over the folders (seeds).

    python bench/remeasure_saved.py --data-dir ../shared/data/fashion-mnist SAVED_FOLDER [SAVED_FOLDER ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import fmnist  # noqa: E402
from fmnist.augment import to_input  # noqa: E402
from search.handover.export import write_model_files  # noqa: E402
from space import ModelSpec, build, param_count  # noqa: E402
from space.network import without_tta  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remeasure import onnx_accuracy  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--data-dir")
    args = p.parse_args()
    test = fmnist.load(args.data_dir, download=False).test
    rows = []
    for folder in args.folders:
        spec = ModelSpec.from_file(folder / "spec.json")
        model = build(spec.arch).eval()
        model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        out = folder.with_name(folder.name + "-onnx")
        if not out.exists():
            write_model_files(out, spec, model, to_input(test.images[:2]))
        row = {"folder": folder.name, "params": param_count(spec.arch), "tta": spec.arch.tta,
               "epochs": spec.train.epochs, "onnx_test_acc": onnx_accuracy(out / "model.onnx", test)}
        if spec.arch.tta != "none":  # the layers between the views: the same weights, one pass
            plain = without_tta(model)
            row["without_tta"] = fmnist.accuracy(fmnist.predict(plain, test.images), test.labels)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in ("onnx_test_acc", "without_tta"):
        values = [r[key] for r in rows if key in r]
        if len(values) > 1:
            print(f"{key}: mean {statistics.fmean(values):.2%} ± {statistics.stdev(values):.2%} over {len(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
