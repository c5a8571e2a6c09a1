"""Figures (matplotlib, Agg backend): training curves, and later energies and Ramachandran plots."""

from p4lightning.plots.curves import plot_linear_curves

__all__ = ["plot_linear_curves"]
