"""LightningModules: the linear fit (paper Sect. 4.1), and later the Boltzmann generator."""

from p4lightning.models.linear import LinearFit

__all__ = ["LinearFit"]
