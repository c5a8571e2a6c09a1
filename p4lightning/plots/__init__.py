"""Figures drawn on `matplotlib.figure.Figure` objects (no pyplot, the global backend untouched): loss curves and
eigenvalue trajectories of the linear problems (:mod:`.linear`, :mod:`.curves`), and the
Boltzmann generator's energy violins, Ramachandran histograms and training curves (:mod:`.molecules`)."""

from p4lightning.plots.curves import plot_linear_curves

__all__ = ["plot_linear_curves"]
