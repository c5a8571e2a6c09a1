r"""Molecular observables as torch functions: the backbone dihedrals φ and ψ of alanine dipeptide, and its
*labeling*: which of the mirror-image atom labelings a conformation has.

**Labeling.** The force field treats the three hydrogens of a methyl group alike, so a conformation and the one
with two of them swapped have the same energy; likewise the two mirror images at CA (L and D alanine). MD never
swaps them (that needs bonds to break), so the MD data — and a generator trained on it — define one labeling, and
the physical Boltzmann distribution is the force field's restricted to it. A generator's rare sample with a swapped
pair has a tiny :math:`q` and an ordinary energy, so its importance weight is enormous: one such sample in
:math:`10^5` can carry all the weight. :func:`labeling_signs` reads the labeling as signs: for each methyl group,
the sign of the torsion of its second and third hydrogen about the C–X bond relative to the first
(≈ +120° / −120°); at CA, the sign of the improper torsion N–CA–C–CB. FAB and TA-BG filter the CA chirality
the same way.
"""

from __future__ import annotations

import torch

from p4lightning.systems.alanine import N_ATOMS, PHI_ATOMS, PSI_ATOMS
from p4lightning.systems.internal import torsion

__all__ = [
    "LABELING_TORSIONS", "as_positions", "has_labeling", "labeling_signs", "phi_psi", "reference_labeling", "same_labeling",
]  # fmt: skip

#: The torsions whose signs are the labeling (0-based atoms): each methyl hydrogen after the first, about its C–X
#: bond relative to the first (ACE, ALA CB, NME), and the chirality at CA (improper N–CA–C–CB).
LABELING_TORSIONS = (
    (2, 1, 4, 0), (3, 1, 4, 0),  # ACE HH32, HH33 from HH31
    (12, 10, 8, 11), (13, 10, 8, 11),  # ALA HB2, HB3 from HB1
    (20, 18, 16, 19), (21, 18, 16, 19),  # NME HH32, HH33 from HH31
    (6, 8, 14, 10),  # CA chirality
)  # fmt: skip


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


def labeling_signs(x: torch.Tensor) -> torch.Tensor:
    """``(B, 7)`` bool: the sign (> 0) of each :data:`LABELING_TORSIONS` torsion of positions ``(B, 22, 3)`` nm."""
    xyz = as_positions(x)
    return torch.stack([torsion(*(xyz[:, i] for i in row)) > 0 for row in LABELING_TORSIONS], dim=-1)


def reference_labeling(reference: torch.Tensor) -> torch.Tensor:
    """``(7,)`` bool: the labeling of the ``reference`` frames, their majority sign per :data:`LABELING_TORSIONS`
    torsion (MD frames all share one)."""
    return labeling_signs(reference).double().mean(0) > 0.5


def has_labeling(x: torch.Tensor, labeling: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: conformations ``x`` whose signs are ``labeling`` ``(7,)`` (from :func:`reference_labeling`)."""
    return (labeling_signs(x) == labeling.to(x.device)).all(-1)


def same_labeling(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: conformations ``x`` with the labeling of the ``reference`` frames."""
    return has_labeling(x, reference_labeling(reference))
