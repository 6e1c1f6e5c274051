"""The report's pictures, as PNG files, with matplotlib's file-only backend."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from fmnist.data import CLASSES  # noqa: E402


def front_plot(path: Path, trials: Sequence[tuple[int, float]], front: Sequence[tuple[int, float]],
               exported: Sequence[tuple[int, float, str]], seeds: Sequence[tuple[int, float, str]]) -> None:
    """Test accuracy against parameters (log scale): all trials, the front, exported models, seeds."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if trials:
        ax.scatter(*zip(*trials), s=12, c="#bbbbbb", label="finished trials")
    if front:
        xs, ys = zip(*sorted(front))
        ax.plot(xs, ys, "-o", c="#1f77b4", ms=5, label="Pareto front (chosen on validation)")
    for x, y, name in exported:
        ax.scatter([x], [y], s=90, facecolors="none", edgecolors="#d62728", linewidths=1.5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#d62728")
    if seeds:
        xs, ys, _names = zip(*seeds)
        # Unlabelled: 17 stars crowd each other; the report's table names each one.
        ax.scatter(xs, ys, marker="*", s=90, c="#ff7f0e", label="seed models (reported)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_plot(path: Path, matrix: Sequence[Sequence[int]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(CLASSES))
    ax.set_xticks(ticks, CLASSES, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, CLASSES, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curve_plot(path: Path, curve: Sequence[Sequence[float]], title: str) -> None:
    """Validation accuracy against epochs, from the trial's recorded curve."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=110)
    points = [(e, a) for e, a in curve if a is not None]
    if points:
        ax.plot(*zip(*points), "-o", ms=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
