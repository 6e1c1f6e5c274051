"""Write one of the stages space's warm starts as a spec file: the architecture and training
settings that a study's warm-start trial trains, so that more seeds of it can be trained with
`fmnist-search train --spec` where the study itself is not at hand.

    python bench/warm_spec.py INDEX [--epochs 21] [--tta flip-shift] > ws.json
    fmnist-search train --spec ws.json --val-size 0 --seed 2 --save ws-seed2

INDEX counts from 0 in the order the search queues them (`space.sample.WARM_STARTS`): a study's
trial with the user attribute `warm_start` = K (in a new study they come first: trial K).
--val-size 0 trains on all 60,000 images, as `export-best --retrain` does; --tta sets the
test-time augmentation that export chose (it changes only how the model predicts, never how it
trains).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from space import param_count  # noqa: E402
from space.sample import WARM_STARTS, fixed  # noqa: E402
from space.spec import TTAS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("index", type=int, choices=range(len(WARM_STARTS)), metavar="INDEX")
    p.add_argument("--epochs", type=int, default=21)
    p.add_argument("--tta", choices=TTAS)
    args = p.parse_args()
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    spec = fixed(WARM_STARTS[args.index], args.epochs)
    if args.tta:
        spec = dataclasses.replace(spec, arch=dataclasses.replace(spec.arch, tta=args.tta))
    print(f"warm start {args.index}: {param_count(spec.arch):,} parameters, TTA {spec.arch.tta}", file=sys.stderr)
    print(spec.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
