"""Validation accuracy of ``fmnist-search train --save`` folders under each test-time augmentation
their training allows, on the search's validation split (10,000 images, the folder's --seed): the
figures to choose a design by, as export-best chooses the TTA (the test set plays no part).

    python bench/val_tta.py --data-dir ../shared/data/fashion-mnist --seed 0 SAVED_FOLDER [...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import fmnist  # noqa: E402
from search.handover.tta import validation_accuracy  # noqa: E402
from space import ModelSpec, param_count  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0, help="the --seed the folders were trained with (the split)")
    p.add_argument("--val-size", type=int, default=10_000)
    args = p.parse_args()
    val = fmnist.make_splits(fmnist.load(args.data_dir, download=False), args.val_size, args.seed).val
    for folder in args.folders:
        spec = ModelSpec.from_file(folder / "spec.json")
        weights = torch.load(folder / "weights.pt", weights_only=True)
        accs = validation_accuracy(spec, weights, val, None)
        print(json.dumps({"folder": folder.name, "params": param_count(spec.arch), "epochs": spec.train.epochs,
                          "weight_decay": spec.train.weight_decay,
                          "val_acc": {tta: round(a, 4) for tta, a in accs.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
