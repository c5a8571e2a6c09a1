"""LightningModules, one per experiment of the paper: the linear fit (Sect. 4.1, :mod:`.linear`), the 2-D density
flows (Sect. 4.2, :mod:`.density`) and the Boltzmann generator (Sect. 4.3, :mod:`.boltzmann`); their base
:class:`~p4lightning.models.compile_safe.CompileSafeLightningModule` keeps logging out of ``torch.compile``."""

from p4lightning.models.boltzmann import BoltzmannGenerator
from p4lightning.models.linear import LinearFit

__all__ = ["BoltzmannGenerator", "LinearFit"]
