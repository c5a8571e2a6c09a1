"""Figures drawn on `matplotlib.figure.Figure` objects (no pyplot, the global backend untouched): linear-problem
curves and eigenvalues, Boltzmann-generator energy violins, Ramachandran histograms and training curves."""

from p4lightning.plots.curves import plot_linear_curves

__all__ = ["plot_linear_curves"]
