r"""Reading an OpenMM ``System`` into typed, frozen parameter records, one per functional form.

:func:`read_system` reads **every parameter** of a non-periodic, unconstrained ``System`` once, in OpenMM's MD
units (nm, rad, kJ/mol, e), into a :class:`ForceField` of records that :mod:`p4lightning.systems.terms`
evaluates and :class:`~p4lightning.systems.torch_energy.TorchEnergy` sums:

- ``HarmonicBondForce`` → :class:`BondTerm`: atoms ``(K, 2)``, :math:`r_0` nm, :math:`k` kJ mol⁻¹ nm⁻²;
- ``HarmonicAngleForce`` → :class:`AngleTerm`: atoms ``(K, 3)``, :math:`\theta_0` rad, :math:`k` kJ mol⁻¹ rad⁻²;
- ``PeriodicTorsionForce`` → :class:`TorsionTerm`: atoms ``(K, 4)``, :math:`n`, :math:`\varphi_0` rad,
  :math:`k` kJ/mol;
- ``NonbondedForce`` → :class:`NonbondedTerm`: per pair :math:`i<j`, :math:`f q_{ij}`, :math:`\sigma_{ij}`,
  :math:`4\varepsilon_{ij}` with the exceptions applied;
- ``CustomGBForce`` (OBC) and ``GBSAOBCForce`` → :class:`GBSAOBCTerm`: per atom :math:`q`, :math:`\rho`,
  :math:`s`, and the model's :class:`OBCConstants`;
- ``CMMotionRemover``: no energy.

A ``CustomGBForce`` is read only if its expressions are openmm.app's OBC1/OBC2 (``implicitSolvent=OBC1`` or
``OBC2``) up to their numbers, which are parsed from the expressions themselves (expression templates with
number slots, :data:`GB_TEMPLATES`). Everything else — other force classes, two forces of one class, cutoffs,
periodic boxes, constraints, virtual sites, parameter offsets, salt screening, other expressions — raises
:class:`ValueError` naming the force (or the particles).

Tensors in the records are float64 (indices int64, the pair mask bool) on the CPU; the records are read-only
descriptions, :class:`~p4lightning.systems.torch_energy.TorchEnergy` keeps their tensors as buffers.

Example:
    >>> from p4lightning.systems.alanine import alanine_dipeptide
    >>> ff = read_system(alanine_dipeptide(600.0).system)
    >>> ff.terms
    ('bond', 'angle', 'torsion', 'nonbonded', 'gb')
    >>> ff.bonds.index.shape, ff.nonbonded.qq.shape       # 21 bonds; 22 * 21 / 2 pairs
    (torch.Size([21, 2]), torch.Size([231]))
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "AngleTerm",
    "BondTerm",
    "ForceField",
    "GBSAOBCTerm",
    "GB_TEMPLATES",
    "NonbondedTerm",
    "OBCConstants",
    "TorsionTerm",
    "openmm_coulomb_constant",
    "openmm_gb_types",
    "pair_indices",
    "read_system",
    "supported_forces",
]

#: force classes :func:`read_system` reads (``CMMotionRemover`` contributes nothing)
_SUPPORTED = (
    "HarmonicBondForce",
    "HarmonicAngleForce",
    "PeriodicTorsionForce",
    "NonbondedForce",
    "CustomGBForce",
    "GBSAOBCForce",
    "CMMotionRemover",
)


def supported_forces() -> tuple[str, ...]:
    """Names of the OpenMM force classes :class:`~p4lightning.systems.torch_energy.TorchEnergy` evaluates."""
    return _SUPPORTED


@functools.lru_cache(maxsize=1)
def openmm_coulomb_constant() -> float:
    r""":math:`1/(4\pi\varepsilon_0)` in kJ mol⁻¹ nm e⁻² exactly as OpenMM uses it, read from OpenMM itself.

    Two unit charges 1 nm apart in a ``NonbondedForce`` (no cutoff) on the Reference platform (float64).
    """
    import openmm

    system = openmm.System()
    system.addParticle(1.0)
    system.addParticle(1.0)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    nb.addParticle(1.0, 1.0, 0.0)
    nb.addParticle(1.0, 1.0, 0.0)
    system.addForce(nb)
    context = openmm.Context(
        system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions([openmm.Vec3(0.0, 0.0, 0.0), openmm.Vec3(1.0, 0.0, 0.0)])
    return float(context.getState(getEnergy=True).getPotentialEnergy()._value)


def openmm_gb_types() -> tuple[int, int]:
    """``(ParticlePairNoExclusions, SingleParticle)`` computation types of ``openmm.CustomGBForce``."""
    import openmm

    return int(openmm.CustomGBForce.ParticlePairNoExclusions), int(openmm.CustomGBForce.SingleParticle)


def pair_indices(n_atoms: int) -> torch.Tensor:
    """Every pair :math:`i < j` of ``n_atoms`` atoms once, ``(P, 2)`` int64, :math:`P = N(N-1)/2`, in the order of
    ``torch.triu_indices`` — the order of :class:`NonbondedTerm`'s per-pair parameters."""
    return torch.triu_indices(n_atoms, n_atoms, offset=1).T


# --- the records ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BondTerm:
    r"""Harmonic bonds :math:`\tfrac12 k (r - r_0)^2`, ``K`` of them.

    Attributes:
        index: atoms :math:`(i, j)` ``(K, 2)`` int64.
        r0: rest lengths :math:`r_0` ``(K,)`` nm.
        k: force constants :math:`k` ``(K,)`` kJ mol⁻¹ nm⁻².
    """

    index: torch.Tensor
    r0: torch.Tensor
    k: torch.Tensor


@dataclass(frozen=True)
class AngleTerm:
    r"""Harmonic angles :math:`\tfrac12 k (\theta - \theta_0)^2` at the middle atom, ``K`` of them.

    Attributes:
        index: atoms :math:`(i, j, k)` ``(K, 3)`` int64, :math:`j` the vertex.
        theta0: rest angles :math:`\theta_0` ``(K,)`` rad.
        k: force constants :math:`k` ``(K,)`` kJ mol⁻¹ rad⁻².
    """

    index: torch.Tensor
    theta0: torch.Tensor
    k: torch.Tensor


@dataclass(frozen=True)
class TorsionTerm:
    r"""Periodic torsions :math:`k (1 + \cos(n\varphi - \varphi_0))`, ``K`` of them.

    Attributes:
        index: atoms :math:`(i, j, k, l)` ``(K, 4)`` int64.
        periodicity: :math:`n` ``(K,)`` (integers, stored as float64).
        phase: :math:`\varphi_0` ``(K,)`` rad.
        k: amplitudes :math:`k` ``(K,)`` kJ/mol.
    """

    index: torch.Tensor
    periodicity: torch.Tensor
    phase: torch.Tensor
    k: torch.Tensor


@dataclass(frozen=True)
class NonbondedTerm:
    r"""Coulomb + Lennard-Jones :math:`\frac{f q_{ij}}{r} + 4\varepsilon_{ij}((\sigma_{ij}/r)^{12} - (\sigma_{ij}/r)^6)`
    for every pair :math:`i < j` (``P`` pairs in the order of :func:`pair_indices`).

    Lorentz–Berthelot combination of the per-particle parameters, replaced by the ``NonbondedForce``'s
    exceptions for the pairs it lists; pairs with :math:`q_{ij} = \varepsilon_{ij} = 0` (exclusions) have
    ``keep`` false and all-zero parameters.

    Attributes:
        keep: ``(P,)`` bool, the pairs that contribute.
        qq: :math:`f q_i q_j` ``(P,)`` kJ mol⁻¹ nm, the Coulomb constant :math:`f` included.
        sigma: :math:`\sigma_{ij}` ``(P,)`` nm.
        four_eps: :math:`4\varepsilon_{ij}` ``(P,)`` kJ/mol.
    """

    keep: torch.Tensor
    qq: torch.Tensor
    sigma: torch.Tensor
    four_eps: torch.Tensor


@dataclass(frozen=True)
class OBCConstants:
    r"""The numbers of an OBC generalized-Born model (:func:`p4lightning.systems.terms.obc_energy`).

    Attributes:
        alpha: :math:`\alpha` of :math:`\tanh(\alpha\psi - \beta\psi^2 + \gamma\psi^3)`.
        beta: :math:`\beta` (0 for OBC1).
        gamma: :math:`\gamma`.
        offset: :math:`\delta` nm, :math:`\tilde\rho = \rho + \delta`.
        coul: :math:`f'` kJ mol⁻¹ nm e⁻², the Coulomb constant the expressions use.
        eps_in: solute dielectric constant :math:`\epsilon_\text{in}`.
        eps_out: solvent dielectric constant :math:`\epsilon_\text{out}`.
        sa: surface-area energy :math:`c_\text{SA}` kJ mol⁻¹ nm⁻².
        probe: solvent probe radius :math:`r_\text{probe}` nm.
    """

    alpha: float
    beta: float
    gamma: float
    offset: float
    coul: float
    eps_in: float
    eps_out: float
    sa: float
    probe: float


@dataclass(frozen=True)
class GBSAOBCTerm:
    r"""OBC implicit solvent with a surface-area term, per atom (``N``).

    Attributes:
        charge: :math:`q_i` ``(N,)`` e.
        rho: offset radii :math:`\rho_i` ``(N,)`` nm.
        scaled: scaled offset radii :math:`s_i` ``(N,)`` nm.
        constants: the model's numbers.
    """

    charge: torch.Tensor
    rho: torch.Tensor
    scaled: torch.Tensor
    constants: OBCConstants


@dataclass(frozen=True)
class ForceField:
    """Everything :func:`read_system` read from a ``System``: one record per force it evaluates (``None`` where
    the System has no such force).

    Attributes:
        n_atoms: number of particles ``N``.
        terms: the term names present, in the System's force order (``"bond"``, ``"angle"``, ``"torsion"``,
            ``"nonbonded"``, ``"gb"``).
    """

    n_atoms: int
    terms: tuple[str, ...]
    bonds: BondTerm | None = None
    angles: AngleTerm | None = None
    torsions: TorsionTerm | None = None
    nonbonded: NonbondedTerm | None = None
    gb: GBSAOBCTerm | None = None


# --- recognising the CustomGBForce of openmm.app's OBC1/OBC2 -----------------------------------------------
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

_Template = tuple[re.Pattern[str], tuple[str, ...]]


def _template(text: str, names: tuple[str, ...]) -> _Template:
    """A regex matching ``text`` literally (whitespace removed) with ``{name}`` slots capturing numbers."""
    parts = re.split(r"\{(\w+)\}", text.replace(" ", ""))
    pattern = "".join(re.escape(p) if i % 2 == 0 else _NUM for i, p in enumerate(parts))
    slots = tuple(parts[1::2])
    if set(slots) - set(names):
        raise RuntimeError(f"template slots {slots} not in {names}")  # programming error
    return re.compile(pattern + r"$"), slots


_CONSTS = ("alpha", "beta", "gamma", "offset", "coul", "eps_in", "eps_out", "kappa", "sa", "probe")
_GB_I = _template(
    "select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*log(L/U)/r), 0);"
    "U=r+sr2;L=max(or1, D);D=abs(r-sr2)",
    _CONSTS,
)
_GB_B = (  # OBC1 writes alpha*psi + gamma*psi^3 (beta = 0); OBC2 writes psi - beta*psi^2 + gamma*psi^3
    _template(
        "1/(1/or-tanh({alpha}*psi+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}", _CONSTS
    ),
    _template(
        "1/(1/or-tanh({alpha}*psi-{beta}*psi^2+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}",
        _CONSTS,
    ),
    _template(
        "1/(1/or-tanh(psi-{beta}*psi^2+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}",
        _CONSTS,
    ),
)
_GB_SELF = _template(
    "-0.5*{coul}*(1/soluteDielectric-1/solventDielectric)*charge^2/B; solventDielectric={eps_out}; "
    "soluteDielectric={eps_in}; kappa={kappa}; offset={offset}",
    _CONSTS,
)
_GB_SA = _template(
    "{sa}*(radius+{probe})^2*(radius/B)^6; radius=or+offset; solventDielectric={eps_out}; "
    "soluteDielectric={eps_in}; kappa={kappa}; offset={offset}",
    _CONSTS,
)
_GB_PAIR = _template(
    "-{coul}*(1/soluteDielectric-1/solventDielectric)*charge1*charge2/f;f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2))); "
    "solventDielectric={eps_out}; soluteDielectric={eps_in}; kappa={kappa}; offset={offset}",
    _CONSTS,
)

#: the expression templates an OBC ``CustomGBForce`` must match: computed value ``I`` (pair), ``B`` (single;
#: three spellings), energy terms self (single), surface area (single), pair
GB_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "I": (_GB_I,),
    "B": _GB_B,
    "self": (_GB_SELF,),
    "surface": (_GB_SA,),
    "pair": (_GB_PAIR,),
}


def _match(template: _Template, expression: str, consts: dict[str, float]) -> bool:
    """Match ``expression`` against ``template``; record its numbers in ``consts`` (they must agree)."""
    pattern, slots = template
    m = pattern.match(expression.replace(" ", ""))
    if m is None:
        return False
    for name, value in zip(slots, m.groups(), strict=True):
        v = float(value)
        if name in consts and not math.isclose(consts[name], v, rel_tol=1e-12, abs_tol=1e-15):
            raise ValueError(
                f"CustomGBForce: constant {name} is {consts[name]} in one term and {v} in another"
            )
        consts[name] = v
    return True


# --- the reader ----------------------------------------------------------------------------------------------
def read_system(system: Any) -> ForceField:
    """Read an ``openmm.System`` into a :class:`ForceField` (module docstring: which forces, which records).

    Args:
        system: an ``openmm.System`` made of the forces in :func:`supported_forces`, without cutoffs, a
            periodic box, constraints or virtual sites.

    Raises:
        ValueError: fewer than 2 particles; a periodic box; constraints; virtual sites, named with their
            particle indices; a force class, a second force of one class, a nonbonded method, parameter offsets
            or a custom expression it does not evaluate, named with the force's index and class; particle
            indices out of range; an implicit-solvent force without the ``NonbondedForce``.
    """
    import openmm

    n_atoms = int(system.getNumParticles())
    if n_atoms < 2:
        raise ValueError(f"system must have at least 2 particles; got {n_atoms}")
    if system.usesPeriodicBoundaryConditions():
        raise ValueError("TorchEnergy evaluates non-periodic systems only; this System uses a periodic box")
    if system.getNumConstraints() != 0:
        raise ValueError(
            f"TorchEnergy evaluates unconstrained systems only; this System has {system.getNumConstraints()} "
            "constraints (their bonds would be missing from the energy)"
        )
    virtual = [i for i in range(n_atoms) if system.isVirtualSite(i)]
    if virtual:
        listed = ", ".join(map(str, virtual))
        which = (
            f"particle {listed} is a virtual site"
            if len(virtual) == 1
            else f"particles {listed} are virtual sites"
        )
        raise ValueError(
            f"TorchEnergy does not support virtual sites: {which} (OpenMM computes its position from "
            "other particles and passes its force on to them; TorchEnergy would treat it as a free "
            "particle); use OpenMMEnergy"
        )
    records: dict[str, Any] = {}
    terms: list[str] = []
    seen: set[str] = set()
    for index, force in enumerate(system.getForces()):
        name = type(force).__name__
        if name not in _SUPPORTED:
            raise ValueError(
                f"force {index} ({name}) is not supported by TorchEnergy; supported: {', '.join(_SUPPORTED)}"
            )
        if name in seen and name != "CMMotionRemover":
            raise ValueError(f"force {index} ({name}): TorchEnergy reads at most one force of each class")
        seen.add(name)
        if force.usesPeriodicBoundaryConditions():
            raise ValueError(f"force {index} ({name}) uses periodic boundary conditions; not supported")
        if isinstance(force, openmm.HarmonicBondForce):
            records["bonds"] = _read_bonds(force, n_atoms)
            terms.append("bond")
        elif isinstance(force, openmm.HarmonicAngleForce):
            records["angles"] = _read_angles(force, n_atoms)
            terms.append("angle")
        elif isinstance(force, openmm.PeriodicTorsionForce):
            records["torsions"] = _read_torsions(force, n_atoms)
            terms.append("torsion")
        elif isinstance(force, openmm.NonbondedForce):
            records["nonbonded"] = _read_nonbonded(force, index, n_atoms)
            terms.append("nonbonded")
        elif isinstance(force, openmm.CustomGBForce):
            records["gb"] = _read_custom_gb(force, index, n_atoms)
            terms.append("gb")
        elif isinstance(force, openmm.GBSAOBCForce):
            records["gb"] = _read_gbsaobc(force, index, n_atoms)
            terms.append("gb")
    if "gb" in records and "nonbonded" not in records:
        raise ValueError("an implicit-solvent force needs the NonbondedForce that holds the charges")
    return ForceField(n_atoms=n_atoms, terms=tuple(terms), **records)


def _v(quantity: Any) -> float:
    """A value in OpenMM's MD units (nm, kJ/mol, rad, e) as a float."""
    return float(quantity._value if hasattr(quantity, "_value") else quantity)


def _index(name: str, rows: list[tuple[int, ...]], width: int, n_atoms: int) -> torch.Tensor:
    idx = torch.tensor(rows, dtype=torch.long).reshape(-1, width)
    if idx.numel() and (idx.min() < 0 or idx.max() >= n_atoms):
        raise ValueError(f"{name}: particle index out of range [0, {n_atoms})")
    return idx


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _read_bonds(force: Any, n_atoms: int) -> BondTerm:
    rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
    index = _index("bond_idx", [(r[0], r[1]) for r in rows], 2, n_atoms)
    return BondTerm(index=index, r0=_f64([_v(r[2]) for r in rows]), k=_f64([_v(r[3]) for r in rows]))


def _read_angles(force: Any, n_atoms: int) -> AngleTerm:
    rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
    index = _index("angle_idx", [(r[0], r[1], r[2]) for r in rows], 3, n_atoms)
    return AngleTerm(index=index, theta0=_f64([_v(r[3]) for r in rows]), k=_f64([_v(r[4]) for r in rows]))


def _read_torsions(force: Any, n_atoms: int) -> TorsionTerm:
    rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
    index = _index("torsion_idx", [(r[0], r[1], r[2], r[3]) for r in rows], 4, n_atoms)
    return TorsionTerm(
        index=index,
        periodicity=_f64([float(r[4]) for r in rows]),
        phase=_f64([_v(r[5]) for r in rows]),
        k=_f64([_v(r[6]) for r in rows]),
    )


def _read_nonbonded(force: Any, index: int, n_atoms: int) -> NonbondedTerm:
    import openmm

    if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        raise ValueError(
            f"force {index} (NonbondedForce): nonbonded method {force.getNonbondedMethod()} is not supported; "
            "only NoCutoff (0)"
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise ValueError(f"force {index} (NonbondedForce): parameter offsets are not supported")
    params = [force.getParticleParameters(i) for i in range(n_atoms)]
    q = _f64([_v(p[0]) for p in params])
    sig = _f64([_v(p[1]) for p in params])
    eps = _f64([_v(p[2]) for p in params])
    # per pair i < j (the order of pair_indices); excluded pairs have zero parameters (they contribute nothing)
    i, j = pair_indices(n_atoms).T
    qq = q[i] * q[j]
    ss = 0.5 * (sig[i] + sig[j])
    ee = torch.sqrt(eps[i] * eps[j])
    column = {(a, b): k for k, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True))}
    for e in range(force.getNumExceptions()):
        a, b, cq, cs, ce = force.getExceptionParameters(e)
        k = column[(min(a, b), max(a, b))]
        qq[k], ss[k], ee[k] = _v(cq), _v(cs), _v(ce)
    keep = (qq != 0) | (ee != 0)
    zero = torch.zeros((), dtype=torch.float64)
    return NonbondedTerm(
        keep=keep,
        qq=torch.where(keep, qq * openmm_coulomb_constant(), zero),
        sigma=torch.where(keep, ss, zero),
        four_eps=torch.where(keep, 4.0 * ee, zero),
    )


def _read_custom_gb(force: Any, index: int, n_atoms: int) -> GBSAOBCTerm:
    where = f"force {index} (CustomGBForce)"
    if force.getNonbondedMethod() != 0:
        raise ValueError(
            f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff"
        )
    if force.getNumGlobalParameters() or force.getNumTabulatedFunctions() or force.getNumExclusions():
        raise ValueError(f"{where}: global parameters, tabulated functions and exclusions are not supported")
    names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
    if names != ["charge", "or", "sr"]:
        raise ValueError(f"{where}: per-particle parameters {names} are not OBC's ['charge', 'or', 'sr']")
    cvs = [force.getComputedValueParameters(i) for i in range(force.getNumComputedValues())]
    terms = [force.getEnergyTermParameters(i) for i in range(force.getNumEnergyTerms())]
    pair_nx, single = openmm_gb_types()
    consts: dict[str, float] = {}
    ok = (
        len(cvs) == 2
        and cvs[0][0] == "I" and cvs[0][2] == pair_nx and _match(_GB_I, cvs[0][1], consts)
        and cvs[1][0] == "B" and cvs[1][2] == single and any(_match(t, cvs[1][1], consts) for t in _GB_B)
        and len(terms) == 3
        and terms[0][1] == single and _match(_GB_SELF, terms[0][0], consts)
        and terms[1][1] == single and _match(_GB_SA, terms[1][0], consts)
        and terms[2][1] == pair_nx and _match(_GB_PAIR, terms[2][0], consts)
    )  # fmt: skip
    if not ok:
        raise ValueError(
            f"{where}: its expressions are not the OBC generalized-Born model of openmm.app (OBC1/OBC2); "
            f"computed values {cvs}, energy terms {terms}"
        )
    if consts.get("kappa", 0.0) != 0.0:
        raise ValueError(f"{where}: salt screening (kappa = {consts['kappa']}) is not supported")
    consts.setdefault("alpha", 1.0)
    consts.setdefault("beta", 0.0)
    consts.pop("kappa", None)
    params = torch.tensor([list(force.getParticleParameters(i)) for i in range(n_atoms)], dtype=torch.float64)
    return GBSAOBCTerm(
        charge=params[:, 0], rho=params[:, 1], scaled=params[:, 2], constants=OBCConstants(**consts)
    )


def _read_gbsaobc(force: Any, index: int, n_atoms: int) -> GBSAOBCTerm:
    import openmm

    where = f"force {index} (GBSAOBCForce)"
    if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
        raise ValueError(
            f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff"
        )
    offset = 0.009
    rows = [force.getParticleParameters(i) for i in range(n_atoms)]
    charge = _f64([_v(r[0]) for r in rows])
    radius = _f64([_v(r[1]) for r in rows])
    scale = _f64([float(r[2]) for r in rows])
    rho = radius - offset
    # GBSAOBCForce: OBC2 constants, surface-area energy per nm^2 as set on the force
    constants = OBCConstants(
        alpha=1.0, beta=0.8, gamma=4.85, offset=offset, coul=openmm_coulomb_constant(),
        eps_in=force.getSoluteDielectric(), eps_out=force.getSolventDielectric(),
        sa=4 * math.pi * _v(force.getSurfaceAreaEnergy()), probe=0.14,
    )  # fmt: skip
    return GBSAOBCTerm(charge=charge, rho=rho, scaled=rho * scale, constants=constants)
