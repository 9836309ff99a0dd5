"""A sweep's results: results.csv (one row per SAE) and the L0/FVU frontier plot beside it."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from visae.core.atomic import atomic_path
from visae.sae import architecture_traits
from visae.training.config import TrainConfig
from visae.training.frontier import plot_frontier

RESULTS_FILE = "results.csv"
FRONTIER_FILE = "frontier.png"


def result_row(member: TrainConfig, summary: dict) -> dict:
    return {"name": member.run_name, "architecture": member.architecture,
            "k": member.k if architecture_traits(member.architecture).uses_k else "",
            "sparsity_coefficient": "" if member.sparsity_coefficient is None else member.sparsity_coefficient,
            "d_sae": member.d_sae, "lr": member.lr, "lr_scale": member.lr_scale, **summary}


def mark_best(rows: list[dict]) -> list[dict]:
    """The rows with `best_lr`: True for the lowest-FVU SAE of each (architecture, sparsity, width) group, the
    point an LR grid (`grid.lr` or `grid.lr_scale`) picks."""
    best = {}
    for row in rows:
        group = (row["architecture"], row["k"], row["sparsity_coefficient"], row["d_sae"])
        if group not in best or float(row["fvu"]) < float(best[group]["fvu"]):
            best[group] = row
    chosen = {id(row) for row in best.values()}
    return [{**row, "best_lr": id(row) in chosen} for row in rows]


def write_results(sweep_dir: Path, rows: list[dict]) -> None:
    """results.csv (one row per SAE, the best LR of each group marked) and frontier.png, written atomically."""
    rows = mark_best(rows)
    with atomic_path(sweep_dir / RESULTS_FILE) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_frontier(rows, sweep_dir / FRONTIER_FILE)


def read_results(sweep_dir: str | os.PathLike) -> list[dict]:
    with open(Path(sweep_dir) / RESULTS_FILE, newline="") as f:
        return list(csv.DictReader(f))
