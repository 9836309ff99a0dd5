"""The L0–FVU frontier plot of a sweep (matplotlib, PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

from visae.core.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both L0 (lower) and FVU (lower), sorted by L0."""
    front, best = [], float("inf")
    for l0, fvu in sorted(points):
        if fvu < best:
            front.append((l0, fvu))
            best = fvu
    return front


def plot_frontier(rows: list[dict], path: str | os.PathLike) -> Path:
    """Scatter of every SAE (L0 on a log axis, FVU) per architecture, its Pareto front drawn as a line; the best
    LR of each group (`best_lr`, see `training.sweep_results.mark_best`) is ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for arch in sorted({r["architecture"] for r in rows}):
        mine = [r for r in rows if r["architecture"] == arch]
        points = [(float(r["l0"]), float(r["fvu"])) for r in mine]
        (line,) = ax.plot(*zip(*pareto_front(points)), "-", alpha=0.6)
        ax.scatter(*zip(*points), color=line.get_color(), label=arch, zorder=3)
        best = [p for r, p in zip(mine, points) if str(r.get("best_lr")) == "True"]
        if best:
            ax.scatter(*zip(*best), s=140, facecolors="none", edgecolors=line.get_color(), zorder=4)
        for r, (l0, fvu) in zip(mine, points):
            ax.annotate(r["name"], (l0, fvu), fontsize=6, alpha=0.7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (mean active latents per token)")
    ax.set_ylabel("FVU = Σ‖x − x̂‖² / Σ‖x − μ‖²")
    ax.set_title("Sparsity–reconstruction frontier")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))  # the temporary name's suffix names no format
    plt.close(fig)
    return path
