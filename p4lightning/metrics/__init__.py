"""Sample quality of Boltzmann generators, defined once (:mod:`~p4lightning.metrics.definitions`), as torchmetrics
(:mod:`~p4lightning.metrics.sampling`) and as the full evaluation (:mod:`~p4lightning.metrics.evaluation`)."""

from p4lightning.metrics.sampling import EffectiveSampleSize, EnergyStatistics, RamachandranKL

__all__ = ["EffectiveSampleSize", "EnergyStatistics", "RamachandranKL"]
