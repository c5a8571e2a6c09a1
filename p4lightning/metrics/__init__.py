"""torchmetrics for Boltzmann generators: energy statistics, effective sample size, torsion-histogram KL."""

from p4lightning.metrics.sampling import EffectiveSampleSize, EnergyStatistics, TorsionKL

__all__ = ["EffectiveSampleSize", "EnergyStatistics", "TorsionKL"]
