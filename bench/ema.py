"""Does an EMA of the weights pay? One training per model, with EMA copies kept beside it.

Each chosen trial's spec (architecture and tuned settings) is trained once with our trainer for
--epochs on the training split; after every optimizer step, copies of the weights (and batch-norm
statistics) are updated as exponential moving averages with each --decay. At the end the trained
model and every EMA copy are evaluated on the same validation split (and the test set, reported
only), so the comparison is within one run: same seed, same batches, same augmentation.

    python bench/ema.py --storage sqlite:///studies/fmnist.db --study fmnist --trial 105 --trial 24 \
        --data-dir ../shared/data/fashion-mnist --epochs 22
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

import fmnist  # noqa: E402
from fmnist import trainer  # noqa: E402
from search.study import record  # noqa: E402
from space import ModelSpec, build, param_count  # noqa: E402


def run(spec: ModelSpec, data: fmnist.Splits, decays: list[float], seed: int) -> dict[str, tuple[float, float]]:
    model = build(spec.arch, seed=seed)
    averages = {d: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in decays}

    def after_step(seen: int, total: int) -> None:  # the trainer calls it after every optimizer step
        for a in averages.values():
            a.update_parameters(model)

    trainer.train(model, data, spec.train, seed=seed, evaluate_test=False, on_progress=after_step)
    amp = trainer.pick_precision(data.train.images.device)
    out = {}
    for name, net in [("trained", model), *((f"EMA {d}", a.module) for d, a in averages.items())]:
        out[name] = tuple(trainer.accuracy(trainer.predict(net, s.images, amp), s.labels) for s in (data.val, data.test))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", default="fmnist")
    p.add_argument("--trial", type=int, action="append", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=22)
    p.add_argument("--decay", type=float, action="append", help="EMA decay per step (default 0.99, 0.998, 0.9995)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    data = fmnist.make_splits(fmnist.load(args.data_dir, download=False), seed=args.seed)
    decays = args.decay or [0.99, 0.998, 0.9995]
    for number in args.trial:
        spec = ModelSpec.from_json(record.spec_text(study.trials[number]))
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=args.epochs))
        clock = time.perf_counter()
        result = run(spec, data, decays, args.seed)
        print(f"trial {number}: {param_count(spec.arch):,} params, {args.epochs} epochs, "
              f"{time.perf_counter() - clock:.0f} s", flush=True)
        for name, (val, test) in result.items():
            print(f"  {name:12} validation {100 * val:.2f}%  test {100 * test:.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
