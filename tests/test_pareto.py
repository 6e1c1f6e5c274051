"""Our non-dominated sort and 2-D hypervolume agree with Optuna's own on random points."""
from __future__ import annotations

import random

import numpy as np
import pytest

from search.pareto import hypervolume_2d, nondominated_ranks

optuna_mo = pytest.importorskip("optuna.study._multi_objective", reason="Optuna's private multi-objective helpers moved")
optuna_hv = pytest.importorskip("optuna._hypervolume", reason="Optuna's private hypervolume module moved")


@pytest.mark.parametrize("dims", [2, 3])
def test_nondominated_ranks_match_optuna(dims):
    rng = random.Random(dims)
    for _ in range(200):
        n = rng.randint(1, 30)
        # Small integer grids: many ties and duplicates, where sorting rules differ first.
        points = [tuple(rng.randint(0, 5) for _ in range(dims)) for _ in range(n)]
        theirs = optuna_mo._fast_non_domination_rank(np.asarray(points, dtype=float))
        assert nondominated_ranks(points) == theirs.tolist(), points


def test_hypervolume_2d_matches_optuna():
    rng = random.Random(7)
    reference = (1.0, 1.0)
    for _ in range(200):
        points = [(rng.random() * 1.2, rng.random() * 1.2) for _ in range(rng.randint(1, 25))]
        inside = [p for p in points if p[0] < reference[0] and p[1] < reference[1]]
        expected = (optuna_hv.compute_hypervolume(np.asarray(inside), np.asarray(reference)) if inside else 0.0)
        assert hypervolume_2d(points, reference) == pytest.approx(expected, abs=1e-12)
