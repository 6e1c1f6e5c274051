"""Re-measure an export from its files alone: each model.onnx on the real test set (onnxruntime),
its parameters from its spec.json, and the issue's marks for the front.

    python bench/remeasure.py EXPORT_FOLDER [--data-dir ../shared/data/fashion-mnist] [--json OUT]

Prints one row per exported model (parameters, test accuracy measured now, the figure its
metrics.json states, the final training's spread where it was retrained), then which seed models
the exported front dominates or ties with (as the tool judges it: by more than the model's spread
over seeds), and the marks: the best accuracy at no more than 5k, 10k, 50k, 100k, 200k, 500k
parameters against the published single models. Nothing is taken from the study: a user can run
this on an export handed to them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

import fmnist  # noqa: E402
from fmnist.augment import to_input  # noqa: E402
from search.view.front import seed_points, seed_verdicts  # noqa: E402
from space import ModelSpec, param_count  # noqa: E402

# The best published single models on this data at each size (issue 19's table).
MARKS = [(5_000, 0.883, "small CNN, KAN comparison paper, 3.0k"), (10_000, 0.900, "SCS network, 7.7k"),
         (100_000, 0.925, "Zalando benchmark table, 83k"), (200_000, 0.939, "DenseNet-BC, about 174k"),
         (500_000, 0.962, "ResNet-32 with random erasing, about 460k, 300 epochs")]
SIZES = (5_000, 10_000, 50_000, 100_000, 200_000, 500_000)


def onnx_accuracy(path: Path, test: fmnist.Split) -> float:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for i in range(0, len(test), 1000):
        x = to_input(test.images[i:i + 1000]).numpy()
        logits = session.run(None, {name: x})[0]
        correct += int((np.argmax(logits, 1) == test.labels[i:i + 1000].numpy()).sum())
    return correct / len(test)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export", type=Path)
    p.add_argument("--data-dir")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    test = fmnist.load(args.data_dir, download=False).test
    rows = []
    for folder in sorted(f for f in args.export.iterdir() if (f / "model.onnx").is_file()):
        spec = ModelSpec.from_file(folder / "spec.json")
        metrics = json.loads((folder / "metrics.json").read_text())
        acc = onnx_accuracy(folder / "model.onnx", test)
        final = metrics.get("final") or {}
        rows.append({"model": folder.name, "params": param_count(spec.arch), "onnx_test_acc": acc,
                     "stated_test_acc": metrics["test_acc"], "search_test_acc": (metrics.get("search") or {}).get("test_acc"),
                     "final_mean": final.get("mean"), "final_std": final.get("std"), "final_runs": final.get("test_acc"),
                     "final_epochs": final.get("epochs")})
    rows.sort(key=lambda r: r["params"])
    print(f"{'model':34} {'params':>9} {'ONNX test':>9} {'stated':>8} {'search':>8} {'final mean ± std (runs)':>28}")
    for r in rows:
        # One run has no spread: printing ± 0.00 would claim one.
        spread = ("-" if r["final_mean"] is None else f"{100 * r['final_mean']:.2f} (1 run)" if r["final_std"] is None
                  else f"{100 * r['final_mean']:.2f} ± {100 * r['final_std']:.2f} ({len(r['final_runs'])})")
        search = f"{100 * r['search_test_acc']:.2f}" if r["search_test_acc"] is not None else "-"
        print(f"{r['model']:34} {r['params']:>9,} {100 * r['onnx_test_acc']:>8.2f}% {100 * r['stated_test_acc']:>7.2f}% "
              f"{search:>8} {spread:>28}")
    beaten, tied = set(), set()
    for r in rows:
        v = seed_verdicts(r["params"], r["onnx_test_acc"], r["final_std"])
        beaten.update(v["seeds_dominated"])
        tied.update(v["seeds_tied"])
    refs = [name for name, _, _ in seed_points()]
    print(f"\nseed models dominated (ONNX test accuracy of the exported run, by more than its spread): "
          f"{len(beaten)} of {len(refs)}")
    if tied - beaten:
        print(f"tied with (within the spread): {', '.join(sorted(tied - beaten))}")
    missed = [n for n in refs if n not in beaten and n not in tied]
    if missed:
        print(f"not dominated: {', '.join(missed)}")
    print("\nbest exported model at each size (ONNX test accuracy), against the published single models:")
    for size in SIZES:
        fit = [r for r in rows if r["params"] <= size]
        best = max(fit, key=lambda r: r["onnx_test_acc"]) if fit else None
        mark = next(((a, what) for s, a, what in MARKS if s == size), None)
        ours = f"{100 * best['onnx_test_acc']:.2f}% ({best['params']:,})" if best else "none"
        versus = f"; published {100 * mark[0]:.1f}% ({mark[1]}): {'above' if best and best['onnx_test_acc'] > mark[0] else 'not above'}" if mark else ""
        print(f"  <= {size:>7,}: {ours}{versus}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
