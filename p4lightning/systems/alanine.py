r"""Alanine dipeptide (Ace-Ala-Nme, 22 atoms) in OBC implicit solvent, built **without constraints**.

The system is ``openmmtools.testsystems.AlanineDipeptideImplicit`` (Amber ff96, OBC1 GBSA; its files ship
inside the package, nothing is downloaded) with ``constraints=None``. With ``HBonds`` constraints OpenMM
drops the X–H bond terms from the force field, so a generated conformation's X–H bond lengths would go
unpenalised by the energy; the Boltzmann generator needs every degree of freedom in the energy.

Units: positions in nm, energies in kJ/mol, temperatures in K; reduced energies
:math:`u = E / (k_B T)` are dimensionless (:math:`k_B T` in kJ/mol from :func:`kt`).

Atom order (0-based; mdtraj names): ACE 0 HH31, 1 CH3, 2 HH32, 3 HH33, 4 C, 5 O; ALA 6 N, 7 H, 8 CA, 9 HA,
10 CB, 11 HB1, 12 HB2, 13 HB3, 14 C, 15 O; NME 16 N, 17 H, 18 C, 19 HH31, 20 HH32, 21 HH33.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p4lightning._validation import InputFileError

__all__ = [
    "ATOMS",
    "CARTESIAN_ATOMS",
    "N_ATOMS",
    "SIBLING_TORSION_ATOMS",
    "PHI_ATOMS",
    "PSI_ATOMS",
    "Z_MATRICES",
    "Z_MATRIX_BACKBONE",
    "Z_MATRIX_STANDARD",
    "AlanineDipeptide",
    "alanine_dipeptide",
    "check_topology",
    "kt",
]

N_ATOMS = 22
#: Backbone torsions (0-based atom indices): φ = C(ACE)–N–CA–C, ψ = N–CA–C–N(NME).
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)
#: Atoms kept in Cartesian coordinates by the mixed transform: ALA N, CA, HA, CB, C.
CARTESIAN_ATOMS = (6, 8, 9, 10, 14)
#: The first Z-matrix of this project (kept for the record and for the checkpoints trained with it): every atom
#: placed by a torsion along bonds *to backbone atoms*, rows (atom, bonded, angle, torsion) in placement order.
#: Atom 4's torsion is φ = tor(4, 6, 8, 14); atom 16's is ψ = tor(16, 14, 8, 6) = tor(6, 8, 14, 16). Sibling
#: atoms (the three hydrogens of a methyl group, ALA O and NME N) each get a torsion of their own, so their
#: fixed ±120° / 180° offsets become three copies of one broad rotor: 11 of the 17 torsions have a circular
#: standard deviation above 1 rad on the 600 K MD.
Z_MATRIX_BACKBONE = (
    (7, 6, 8, 14),  # H (ALA)
    (4, 6, 8, 14),  # C (ACE): φ
    (5, 4, 6, 8),  # O (ACE)
    (1, 4, 6, 8),  # CH3 (ACE)
    (0, 1, 4, 6),  # HH31
    (2, 1, 4, 6),  # HH32
    (3, 1, 4, 6),  # HH33
    (11, 10, 8, 6),  # HB1
    (12, 10, 8, 6),  # HB2
    (13, 10, 8, 6),  # HB3
    (15, 14, 8, 6),  # O (ALA)
    (16, 14, 8, 6),  # N (NME): ψ
    (17, 16, 14, 8),  # H (NME)
    (18, 16, 14, 8),  # C (NME)
    (19, 18, 16, 14),  # HH31
    (20, 18, 16, 14),  # HH32
    (21, 18, 16, 14),  # HH33
)
#: The standard Z-matrix of the Boltzmann-generator literature (Noé et al. 2019; the one FAB, TA-BG and bgflow
#: use for this molecule), rows in placement order. Rule: atom ``i`` is bonded to ``j``, ``j`` to ``k``; its
#: torsion partner ``l`` is bonded to ``k`` (a proper torsion, for the first atom placed on a rotor) or to ``j``
#: (a *sibling* of ``i`` placed before it: HB2, HB3 from HB1; the methyl hydrogens of ACE and NME from their
#: first hydrogen; ALA O from NME N; ALA H from ACE C). NME H is placed by its torsion to ALA O (the peptide
#: plane). A sibling's torsion measures the stiff offset between two bonds on one atom (≈ ±120° or 180°,
#: ~0.15 rad wide at 600 K), so only the rotors stay broad: the three methyl rotors and ψ (φ has two basins).
Z_MATRIX_STANDARD = (
    (4, 6, 8, 14),  # C (ACE): φ
    (7, 6, 8, 4),  # H (ALA), from ACE C
    (5, 4, 6, 8),  # O (ACE): ω (ACE side)
    (1, 4, 6, 8),  # CH3 (ACE): ω
    (0, 1, 4, 6),  # HH31: the ACE methyl rotor
    (2, 1, 4, 0),  # HH32, from HH31
    (3, 1, 4, 0),  # HH33, from HH31
    (11, 10, 8, 6),  # HB1: the ALA methyl rotor
    (12, 10, 8, 11),  # HB2, from HB1
    (13, 10, 8, 11),  # HB3, from HB1
    (16, 14, 8, 6),  # N (NME): ψ
    (15, 14, 8, 16),  # O (ALA), from NME N
    (17, 16, 14, 15),  # H (NME): in the peptide plane, torsion to ALA O
    (18, 16, 14, 8),  # C (NME): ω (NME side)
    (19, 18, 16, 14),  # HH31: the NME methyl rotor
    (20, 18, 16, 19),  # HH32, from HH31
    (21, 18, 16, 19),  # HH33, from HH31
)
#: The Z-matrices by name (the ``z_matrix`` option of the Boltzmann generator).
Z_MATRICES = {"standard": Z_MATRIX_STANDARD, "backbone": Z_MATRIX_BACKBONE}
#: Per Z-matrix, the atoms placed by a *sibling* torsion (partner bonded to the bond partner, not to the angle
#: partner): narrow offsets between two bonds on one atom. The others are proper torsions (rotors, φ, ψ, ω).
SIBLING_TORSION_ATOMS = {"standard": (2, 3, 7, 12, 13, 15, 20, 21), "backbone": ()}
#: (residue, element, heavy-atom name) of every atom in order; hydrogen names vary between writers (HH31/H1)
ATOMS = (
    ("ACE", "H", None), ("ACE", "C", "CH3"), ("ACE", "H", None), ("ACE", "H", None), ("ACE", "C", "C"),
    ("ACE", "O", "O"), ("ALA", "N", "N"), ("ALA", "H", None), ("ALA", "C", "CA"), ("ALA", "H", None),
    ("ALA", "C", "CB"), ("ALA", "H", None), ("ALA", "H", None), ("ALA", "H", None), ("ALA", "C", "C"),
    ("ALA", "O", "O"), ("NME", "N", "N"), ("NME", "H", None), ("NME", "C", ("C", "CH3")), ("NME", "H", None),
    ("NME", "H", None), ("NME", "H", None),
)  # fmt: skip


def check_topology(topology: object, where: str = "topology") -> None:
    """Require an ``mdtraj.Topology`` (or a path mdtraj reads) to be this system's atoms in this order.

    Compared per atom: residue name, element, and the name of every heavy atom (hydrogen names differ between
    PDB writers). Raises :class:`~p4lightning._validation.InputFileError` (a ``ValueError``) naming the first atom that differs.
    """
    import mdtraj

    if isinstance(topology, mdtraj.Topology):
        top = topology
    else:
        if not Path(str(topology)).is_file():
            raise FileNotFoundError(f"{where}: file not found: {topology}")
        try:
            top = mdtraj.load_topology(str(topology))
        except Exception as err:  # mdtraj raises many types (AttributeError, ValueError, IOError...) on bad files
            raise InputFileError(f"{where} is not readable by mdtraj: {type(err).__name__}: {err}".split("\n")[0]) from err
    if top.n_atoms != N_ATOMS:
        raise InputFileError(f"{where} has {top.n_atoms} atoms; alanine dipeptide has {N_ATOMS}")
    for i, (atom, (res, element, name)) in enumerate(zip(top.atoms, ATOMS, strict=True)):
        names = (name,) if isinstance(name, str) else name
        got = (atom.residue.name, atom.element.symbol if atom.element is not None else "?", atom.name)
        if got[0] != res or got[1] != element or (name is not None and got[2] not in names):
            expected = f"{res} {element}" + (f" {'/'.join(names)}" if name is not None else "")
            raise InputFileError(
                f"{where} is not alanine dipeptide in this system's atom order: atom {i} is "
                f"{got[0]} {got[1]} {got[2]}, expected {expected}"
            )


#: Boltzmann constant times Avogadro's number, kJ/(mol K) (CODATA 2018, as OpenMM's unit.MOLAR_GAS_CONSTANT_R).
MOLAR_GAS_CONSTANT = 8.314462618e-3


def kt(temperature: float) -> float:
    """:math:`k_B T` in kJ/mol at ``temperature`` in K."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 K; got {temperature}")
    return MOLAR_GAS_CONSTANT * float(temperature)


def _import_testsystems():  # noqa: ANN202 - returns a module
    """Import openmmtools.testsystems with pymbar's import-time banners and log chatter silenced."""
    for name in ("pymbar", "openmmtools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from openmmtools import testsystems
    return testsystems


@dataclass(frozen=True)
class AlanineDipeptide:
    """The system, its topology and a reference conformation.

    Attributes:
        system: ``openmm.System`` without constraints (OBC1 implicit solvent, no cutoff).
        topology: ``openmm.app.Topology``.
        positions: reference positions, ``(22, 3)`` float64 array in nm.
        temperature: default target temperature in K.
    """

    system: object
    topology: object
    positions: np.ndarray
    temperature: float

    @property
    def kt(self) -> float:
        """:math:`k_B T` in kJ/mol at :attr:`temperature`."""
        return kt(self.temperature)

    def mdtraj_topology(self):  # noqa: ANN201 - mdtraj.Topology
        """The topology as an ``mdtraj.Topology``."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self.topology)

    def write_pdb(self, path: str | Path) -> Path:
        """Write the topology with the reference positions to ``path`` as PDB (atomically)."""
        import mdtraj

        from p4lightning._io import atomic_path

        path = Path(path)
        traj = mdtraj.Trajectory(self.positions[None].astype(np.float32), self.mdtraj_topology())
        with atomic_path(path) as tmp:
            traj.save_pdb(str(tmp))
        return path


def alanine_dipeptide(temperature: float = 600.0) -> AlanineDipeptide:
    """Alanine dipeptide in OBC implicit solvent without constraints, target temperature ``temperature`` K."""
    kt(temperature)  # validates
    from openmm import unit

    testsystems = _import_testsystems()
    ts = testsystems.AlanineDipeptideImplicit(constraints=None)
    positions = np.asarray(ts.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    if ts.system.getNumConstraints() != 0:
        raise RuntimeError("expected an unconstrained alanine dipeptide system")
    return AlanineDipeptide(ts.system, ts.topology, positions, float(temperature))
