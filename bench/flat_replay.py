"""Replay --stop-when-flat on a recorded study: where it would have stopped, the compute it would
have saved and the hypervolume it would have lost.

    python bench/flat_replay.py STORAGE_URL [--study fmnist] [--fractions 0.002 0.005 0.01 0.02]

Walks the study's trials in the order they finished and applies the rule of search/view/hypervolume.py
after each (as the search does after each trial); nothing is written to the study.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.study import record  # noqa: E402
from search.view import hypervolume  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("storage")
    p.add_argument("--study", default="fmnist")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.002, 0.005, 0.01, 0.02])
    args = p.parse_args()
    study = optuna.load_study(study_name=args.study, storage=args.storage)
    trials = study.get_trials(deepcopy=False)
    ref = hypervolume.reference(study)
    steps = hypervolume.history(trials, ref)
    if not steps:
        print("no finished trials")
        return 1
    order = {s.number: k for k, s in enumerate(steps)}
    finished = sorted((t for t in trials if t.number in order), key=lambda t: order[t.number])
    last = steps[-1]
    print(f"study {args.study!r}: {len(steps)} finished trials, {last.images:,} training images, "
          f"{last.seconds / 60:.1f} device-minutes, final validation hypervolume {last.hv:.4f} (test {last.test_hv:.4f})")
    print(f"{'fraction':>8}  {'stops after trial':>17}  {'compute saved (images)':>24}  {'device-min saved':>16}  "
          f"{'HV lost':>8}  {'test HV lost':>12}")
    for fraction in args.fractions:
        trained = 0
        stop = None
        for k, t in enumerate(finished):
            trained += record.was_trained(t) and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            if hypervolume.flat(steps[:k + 1], fraction, trained):
                stop = steps[k]
                break
        if stop is None:
            print(f"{fraction:>8g}  {'never':>17}")
            continue
        print(f"{fraction:>8g}  {stop.number:>17}  {last.images - stop.images:>14,} ({100 * (1 - stop.images / last.images):4.1f}%)  "
              f"{(last.seconds - stop.seconds) / 60:>16.1f}  {last.hv - stop.hv:>8.4f}  {last.test_hv - stop.test_hv:>12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
