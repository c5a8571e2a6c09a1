"""p4lightning: property-preserving parameter perturbations (P⁴) for PyTorch Lightning.

References:
    A. Krämer, J. Köhler, F. Noé. Training neural networks with property-preserving parameter
    perturbations. arXiv:2010.07033.
"""

from p4lightning.bijection import Bijection, Inverse
from p4lightning.callbacks import P4MergeCallback
from p4lightning.flows import BentIdentity, InverseBentIdentity
from p4lightning.p4 import (
    LogBounds,
    MergeOutcome,
    MergeRefusedError,
    MergeStatus,
    P4Inv,
    P4Module,
    P4Orth,
    find_p4_modules,
)

__version__ = "0.1.0"

__all__ = [
    "BentIdentity",
    "Bijection",
    "Inverse",
    "InverseBentIdentity",
    "LogBounds",
    "MergeOutcome",
    "MergeRefusedError",
    "MergeStatus",
    "P4Inv",
    "P4MergeCallback",
    "P4Module",
    "P4Orth",
    "find_p4_modules",
]
