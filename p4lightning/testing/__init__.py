"""What p4lightning's tests check against, usable in your own tests: the battery of mathematical checks every
bijection passes (:mod:`p4lightning.testing.bijections`, torch only) and OpenMM's Reference platform as the
energy oracle (:mod:`p4lightning.testing.energy_oracle`, imported on first use: it needs OpenMM)."""

from __future__ import annotations

from typing import Any

from p4lightning.testing.bijections import (
    check_bijection,
    check_gradients,
    check_inverse_ladj,
    check_ladj_against_jacobian,
    check_round_trip,
    check_shapes,
    check_state_dict_round_trip,
)

__all__ = [
    "check_bijection",
    "check_gradients",
    "check_inverse_ladj",
    "check_ladj_against_jacobian",
    "check_round_trip",
    "check_shapes",
    "check_state_dict_round_trip",
    "openmm_reference",
]


def __getattr__(name: str) -> Any:
    if name in ("openmm_reference", "OPENMM_TERMS"):
        import importlib

        return getattr(importlib.import_module("p4lightning.testing.energy_oracle"), name)
    raise AttributeError(f"module 'p4lightning.testing' has no attribute {name!r}")
