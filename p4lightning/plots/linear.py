"""Figures of the linear experiments (paper Figs. 2–4): loss curves and eigenvalue trajectories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: the user's backend is never touched

__all__ = ["plot_linear_experiment"]


def plot_linear_experiment(
    problem: str,
    runs: Mapping[str, Mapping[str, Any]],
    target_eigenvalues: Sequence[complex],
    path: str | Path,
) -> Path:
    """Loss of every run (left) and, per run, its eigenvalue trajectory in the complex plane.

    Args:
        problem: title.
        runs: ``{label: {"step": [...], "loss": [...], "eig_real": [[...], ...], "eig_imag": [[...], ...]}}``.
        target_eigenvalues: eigenvalues of the target matrix (black squares).
        path: output PNG.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_panels = 1 + len(runs)
    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(4.6 * cols, 4.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = axes.ravel()
    loss_ax = flat[0]
    target = np.asarray(target_eigenvalues)
    for i, (label, run) in enumerate(runs.items()):
        color = f"C{i}"
        loss_ax.semilogy(run["step"], run["loss"], label=label, color=color, lw=1.2)
        ax = flat[i + 1]
        real, imag = np.asarray(run["eig_real"]), np.asarray(run["eig_imag"])
        steps = np.repeat(np.asarray(run["step"])[:, None], real.shape[1], axis=1)
        ax.scatter(real.ravel(), imag.ravel(), c=steps.ravel(), s=1.5, cmap="viridis", alpha=0.5)
        ax.scatter(
            target.real, target.imag, marker="s", s=28, facecolors="none", edgecolors="black", label="target"
        )
        ax.scatter(real[-1], imag[-1], marker="x", s=22, color="red", label="final")
        ax.set_title(f"eigenvalues: {label}", fontsize=9)
        ax.set_xlabel("Re")
        ax.set_ylabel("Im")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    loss_ax.set_title(f"{problem}: loss")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.tight_layout()
    from p4lightning._io import save_figure

    return save_figure(fig, path, dpi=100)
