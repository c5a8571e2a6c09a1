"""LightningModules: the linear fit (paper Sect. 4.1) and the Boltzmann generator (Sect. 4.3)."""

from p4lightning.models.boltzmann import BoltzmannGenerator
from p4lightning.models.linear import LinearFit

__all__ = ["BoltzmannGenerator", "LinearFit"]
