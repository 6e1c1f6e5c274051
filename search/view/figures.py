"""The report's pictures, as PNG files, with matplotlib's file-only backend."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from fmnist.data import CLASSES  # noqa: E402


def front_plot(path: Path, trials: Sequence[tuple[int, float]], front: Sequence[tuple[int, float]],
               exported: Sequence[tuple[int, float, str]], seeds: Sequence[tuple[int, float, str, bool]]) -> None:
    """Test accuracy against parameters (log scale): all trials, the front, exported models, and the
    seed models as labelled stars (hollow where the seed's figure is a validation accuracy)."""
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    if trials:
        ax.scatter(*zip(*trials), s=12, c="#bbbbbb", label="finished trials")
    if front:
        xs, ys = zip(*sorted(front))
        ax.plot(xs, ys, "-o", c="#1f77b4", ms=5, label="Pareto front (chosen on validation)")
    for x, y, name in exported:
        ax.scatter([x], [y], s=90, facecolors="none", edgecolors="#d62728", linewidths=1.5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#d62728")
    for validation, label in ((False, "seed models (their test figure)"), (True, "seed models (their validation figure)")):
        group = [s for s in seeds if s[3] == validation]
        if group:
            ax.scatter([s[0] for s in group], [s[1] for s in group], marker="*", s=110, label=label,
                       facecolors="none" if validation else "#ff7f0e", edgecolors="#ff7f0e")
    for i, (x, y, name, _) in enumerate(seeds):
        ax.annotate(name, (x, y), textcoords="offset points", fontsize=6.5, color="#a0522d",
                    xytext=((5, 4), (5, -9), (-5, 4), (-5, -9))[i % 4], ha="left" if i % 4 < 2 else "right")
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


def curves_plot(path: Path, curves: Mapping[str, Sequence[Sequence[float]]]) -> None:
    """Validation accuracy against epochs of each model, on one shared axis."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, curve in curves.items():
        points = [(e, a) for e, a in curve if a is not None]
        if points:
            ax.plot(*zip(*points), "-o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title("learning curves of the exported models (validation accuracy)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def hypervolume_plot(path: Path, images: Sequence[int], seconds: Sequence[float], val: Sequence[float],
                     test: Sequence[float], reference: tuple[float, int]) -> None:
    """The front's hypervolume against compute: training images (left) and device-seconds (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110, sharey=True)
    for ax, x, label in ((axes[0], images, "training images, all trials"),
                         (axes[1], [s / 60 for s in seconds], "device-minutes, all workers")):
        ax.step(x, val, where="post", label="validation (selected on)")
        ax.step(x, test, where="post", linestyle=":", label="test (for information)")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("hypervolume (error x log10 params)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"hypervolume of the front against compute (reference {100 * reference[0]:g}% error, "
                 f"{reference[1]:,} params)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
