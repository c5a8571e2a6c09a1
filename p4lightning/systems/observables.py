"""Molecular observables as torch functions: the backbone dihedrals φ and ψ of alanine dipeptide."""

from __future__ import annotations

import torch

from p4lightning.systems.alanine import N_ATOMS, PHI_ATOMS, PSI_ATOMS
from p4lightning.systems.internal import torsion

__all__ = ["as_positions", "phi_psi"]


def as_positions(x: torch.Tensor, n_atoms: int = N_ATOMS, name: str = "positions") -> torch.Tensor:
    """``x`` of shape ``(B, n_atoms, 3)`` or ``(B, 3 n_atoms)`` (nm) as ``(B, n_atoms, 3)``; raise otherwise."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor of shape (B, {n_atoms}, 3) or (B, {3 * n_atoms})"
        )
    if x.dim() == 3 and x.shape[1:] == (n_atoms, 3):
        return x
    if x.dim() == 2 and x.shape[1] == 3 * n_atoms:
        return x.reshape(x.shape[0], n_atoms, 3)
    raise ValueError(
        f"{name} must have shape (B, {n_atoms}, 3) or (B, {3 * n_atoms}) in nm (the system has {n_atoms} atoms); "
        f"got shape {tuple(x.shape)}"
    )


def phi_psi(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Backbone torsions :math:`\varphi` (C–N–CA–C) and :math:`\psi` (N–CA–C–N) in rad, each ``(B,)``."""
    xyz = as_positions(x)
    return torsion(*(xyz[:, i] for i in PHI_ATOMS)), torsion(*(xyz[:, i] for i in PSI_ATOMS))
