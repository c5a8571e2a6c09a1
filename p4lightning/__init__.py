"""p4lightning: property-preserving parameter perturbations (P⁴) for PyTorch Lightning.

References:
    A. Krämer, J. Köhler, F. Noé. Training neural networks with property-preserving parameter
    perturbations. arXiv:2010.07033.
"""

from typing import Any

from p4lightning.bijection import Bijection, Inverse
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
from p4lightning.p4.schedule import MergeSchedule

__version__ = "0.1.0"

__all__ = [
    "BentIdentity",
    "Bijection",
    "Inverse",
    "InverseBentIdentity",
    "LogBounds",
    "MergeSchedule",
    "MergeOutcome",
    "MergeRefusedError",
    "MergeStatus",
    "P4Inv",
    "P4MergeCallback",
    "P4Module",
    "P4Orth",
    "find_p4_modules",
]


#: Lightning-facing names, imported on first use (PEP 562) so that ``import p4lightning`` and the core
#: (``p4lightning.p4``) load torch only: no Lightning, no matplotlib, no side effects.
_LAZY = {"P4MergeCallback": "p4lightning.callbacks.merge"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'p4lightning' has no attribute {name!r}")
