"""What p4lightning's tests check against, usable in your own tests: the battery of mathematical checks every
bijection passes (:mod:`p4lightning.testing.bijections`, torch only) and OpenMM's Reference platform as the
energy oracle (:mod:`p4lightning.testing.energy_oracle`, imported on first use: it needs OpenMM)."""

from __future__ import annotations

from typing import Any

from p4lightning.testing import bijections
from p4lightning.testing.bijections import *  # noqa: F403 - the battery, listed once in its module's __all__

__all__ = [*bijections.__all__, "openmm_reference"]  # noqa: F405 - openmm_reference: __getattr__ below


def __getattr__(name: str) -> Any:
    if name in ("openmm_reference", "OPENMM_TERMS"):
        import importlib

        return getattr(importlib.import_module("p4lightning.testing.energy_oracle"), name)
    raise AttributeError(f"module 'p4lightning.testing' has no attribute {name!r}")
