"""Training-curve figures written by the experiment scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: the user's backend is never touched

__all__ = ["plot_linear_curves"]


def plot_linear_curves(
    results: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], path: str | Path
) -> Path:
    """One row per linear problem: loss (left) and max|A A⁻¹ − I| (right) against the optimizer step.

    Args:
        results: ``{problem: {run label: {"step": [...], "loss": [...], "inverse_error": [...]}}}``;
            runs without ``inverse_error`` (plain linear layers) only appear in the loss panel.
        path: output PNG; parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 3.3 * len(results)))
    axes = fig.subplots(len(results), 2, squeeze=False)
    for row, (problem, runs) in zip(axes, results.items(), strict=True):
        for i, (label, curve) in enumerate(runs.items()):
            color = f"C{i}"  # the same run has the same colour in both panels
            row[0].semilogy(curve["step"], curve["loss"], label=label, lw=1.2, color=color)
            if curve.get("inverse_error"):
                row[1].semilogy(curve["step"], curve["inverse_error"], label=label, lw=1.2, color=color)
        row[0].set_title(f"{problem}: loss")
        row[1].set_title(f"{problem}: max|A A$^{{-1}}$ - I|")
        for ax in row:
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    from p4lightning._io import save_figure

    return save_figure(fig, path, dpi=110)
