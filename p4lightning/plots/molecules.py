"""Figures of Boltzmann-generator runs: energy violins and Ramachandran plots (paper Fig. 6), training curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # drawn and saved without pyplot: the user's backend is never touched

__all__ = ["plot_energy_violins", "plot_evaluations", "plot_ramachandran", "plot_training_curves"]


def plot_energy_violins(
    energies: Mapping[str, np.ndarray], threshold: float, path: str | Path, clip: float = 200.0
) -> Path:
    """Violins of reduced energies (k_BT) per data set, annotated with the low-energy fraction (u < threshold).

    Energies above ``clip`` k_BT (and non-finite ones) are drawn at ``clip`` so a few exploded samples do not
    squash the plot; the fractions use the unclipped values.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(1.9 * len(energies) + 2, 4.2))
    ax = fig.subplots()
    data = []
    for u in energies.values():
        u = np.asarray(u, dtype=np.float64)
        data.append(np.clip(np.where(np.isfinite(u), u, clip), None, clip))
    parts = ax.violinplot(data, showmedians=True)
    for body, color in zip(parts["bodies"], ("C0", "C1", "C2", "C3", "C4"), strict=False):
        body.set_facecolor(color)
        body.set_alpha(0.6)
    ax.axhline(threshold, color="k", ls="--", lw=0.8)
    for i, u in enumerate(energies.values(), start=1):
        u = np.asarray(u, dtype=np.float64)
        frac = float(np.mean(np.isfinite(u) & (u < threshold)))
        ax.text(i, ax.get_ylim()[1], f"{frac:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(1, len(energies) + 1), list(energies), fontsize=8)
    ax.set_ylabel("reduced energy u (k$_B$T)")
    ax.set_title(f"low-energy fraction (u < {threshold:.1f} k$_B$T) above each violin", fontsize=9, pad=18)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_ramachandran(
    torsions: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, bins: int = 60
) -> Path:
    """Side-by-side log-density histograms of (φ, ψ) in radians, one panel per data set."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4.0 * len(torsions), 3.8))
    axes = fig.subplots(1, len(torsions), squeeze=False)
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    for ax, (name, (phi, psi)) in zip(axes[0], torsions.items(), strict=True):
        h, _, _ = np.histogram2d(np.asarray(phi), np.asarray(psi), bins=[edges, edges], density=True)
        with np.errstate(divide="ignore"):
            ax.imshow(
                np.log(h.T),
                origin="lower",
                extent=(-math.pi, math.pi, -math.pi, math.pi),
                cmap="viridis",
                aspect="equal",
            )
        ax.set_title(f"{name} (n = {len(phi)})", fontsize=9)
        ax.set_xlabel("φ (rad)")
        ax.set_ylabel("ψ (rad)")
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_training_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """One panel per metric: ``history[name] = [(step, value), ...]``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [k for k, v in history.items() if v]
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, lw=1.0, marker="." if len(steps) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically (its format from the suffix)."""
    from p4lightning._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def plot_evaluations(
    evaluations: Mapping[str, Any], out_dir: str | Path, noise_nm: float = 0.004
) -> list[Path]:
    """Energy violins (MD, MD + noise, then each model's samples) and Ramachandran histograms (MD, then each
    model), the paper's Fig. 6, from one or more evaluations against the same MD set."""
    from p4lightning.systems.alanine import N_ATOMS
    from p4lightning.systems.observables import phi_psi

    out_dir = Path(out_dir)
    first = next(iter(evaluations.values()))
    violins = {"MD (held out)": first.md_u.numpy(), f"MD + {noise_nm:g} nm noise": first.noisy_u.numpy()}
    rama = {"MD (held out)": tuple(t.numpy() for t in phi_psi(first.md_x.reshape(-1, N_ATOMS, 3).double()))}
    for name, ev in evaluations.items():
        violins[name] = ev.samples_u.numpy()
        rama[name] = tuple(t.numpy() for t in phi_psi(ev.samples_x.reshape(-1, N_ATOMS, 3).double()))
    return [
        plot_energy_violins(violins, first.threshold, out_dir / "energy_violins.png"),
        plot_ramachandran(rama, out_dir / "ramachandran.png"),
    ]
