"""Replay a stored `bench/pruning.py` pair offline with other --prune-margin values.

    python bench/prune_replay.py --storage sqlite:///PRUNING.db [--margins off,0,0.005,0.01,0.02,0.03]

Each trial of the `pareto` study is judged again at the rungs it reached, against the trials
before it at the same rung (their stored rung values), with `search.loop.prune.decide` (the chance rule
is not replayed). A trial the replayed rule stops sooner than it was stopped is charged the
images up to that rung; the others keep their stored cost, and only the finished trials still
kept count toward the hypervolume.
The sampler's reaction to the different pruning is not modelled: this ranks rules, it does not
replace a real run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and bench/search.py would hide the
# installed `search` package: take the folder off before importing it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import optuna  # noqa: E402

from search.view.quality import hypervolume, images_trained  # noqa: E402
from search.study import record  # noqa: E402
from search.loop.prune import Entry, decide  # noqa: E402


def trained(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if not record.is_skipped(t)]


def replay(trials: list[optuna.trial.FrozenTrial], margin: float | None, factor: int,
           min_trials: int) -> tuple[int, list[optuna.trial.FrozenTrial]]:
    """(images the replayed rule would have used, the finished trials it would have kept)."""
    rungs = sorted({rung for t in trials for rung in record.rungs_of(t)})
    images, kept = 0, []
    for i, t in enumerate(trials):
        stop = None
        for rung in rungs:
            key = record.rung_key(rung)
            if key not in t.user_attrs or record.is_seed(t):
                break
            peers = [Entry(p.number, (p.user_attrs[record.PARAMS],), p.user_attrs[key])
                     for p in trials[:i] if key in p.user_attrs]
            if decide(Entry(t.number, (t.user_attrs[record.PARAMS],), t.user_attrs[key]), peers, factor,
                      min_trials, margin):
                stop = rung
                break
        if stop is not None and t.user_attrs.get(record.PRUNED_RUNG) != stop:  # stopped sooner than it was
            images += stop
        else:
            images += t.user_attrs[record.IMAGES_SEEN]
            kept.append(t)
    return images, kept


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--margins", default="off,0,0.005,0.01,0.02,0.03")
    p.add_argument("--factor", type=int, default=3)
    p.add_argument("--min-trials", type=int, default=5)
    args = p.parse_args()
    none, pareto = trained(args.storage, "bench-none"), trained(args.storage, "bench-pareto")
    print(f"{len(pareto)} trials; {'margin':>8s} {'compute saved':>13s} {'HV kept':>8s}")
    for text in args.margins.split(","):
        margin = None if text == "off" else float(text)
        images, kept = replay(pareto, margin, args.factor, args.min_trials)
        print(f"{'':>10s} {text:>8s} {images_trained(none) / images:>12.2f}x "
              f"{hypervolume(kept) / hypervolume(none):>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
