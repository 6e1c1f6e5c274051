"""Pareto dominance, fronts and 2-D hypervolume, on plain tuples of values to minimize."""
from __future__ import annotations

from typing import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` in every value and better in one (all minimized)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_ranks(points: Sequence[Point]) -> list[int]:
    """0 for the front, 1 for the front of the rest, and so on (non-dominated sorting)."""
    ranks = [-1] * len(points)
    remaining = list(range(len(points)))
    rank = 0
    while remaining:
        layer = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)]
        for i in layer:
            ranks[i] = rank
        remaining = [i for i in remaining if ranks[i] < 0]
        rank += 1
    return ranks


def hypervolume_2d(points: Sequence[Point], reference: Point) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (both values minimized)."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for x, y in inside:  # sorted by x: each point adds the strip between its y and the best y so far
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return area
