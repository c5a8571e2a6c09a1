r"""The potential energy of an OpenMM ``System`` as batched torch algebra: same numbers, any device, no workers.

OpenMM evaluates one conformation per call (openmm#2535). A Boltzmann generator's target is one small fixed
molecule, whose whole force field is a few hundred pair terms: tensor algebra over the batch. :class:`TorchEnergy`
reads **every parameter from the System** and evaluates, for positions :math:`x` of shape ``(B, N, 3)`` nm,

.. math::
    E = \sum_\text{bonds} \tfrac12 k (r - r_0)^2 + \sum_\text{angles} \tfrac12 k (\theta - \theta_0)^2
        + \sum_\text{torsions} k \bigl(1 + \cos(n\varphi - \varphi_0)\bigr)
        + \sum_{i<j} \Bigl[ \frac{f\, q_{ij}}{r_{ij}}
        + 4\varepsilon_{ij}\Bigl(\bigl(\tfrac{\sigma_{ij}}{r_{ij}}\bigr)^{12} - \bigl(\tfrac{\sigma_{ij}}{r_{ij}}\bigr)^6\Bigr)\Bigr]
        + E_\text{GB}

(kJ/mol), with :math:`q_{ij} = q_i q_j`, Lorentz–Berthelot :math:`\sigma_{ij} = (\sigma_i + \sigma_j)/2`,
:math:`\varepsilon_{ij} = \sqrt{\varepsilon_i \varepsilon_j}` except for the NonbondedForce's exceptions
(excluded pairs contribute nothing; scaled 1–4 pairs use their own :math:`q_{ij}, \sigma_{ij}, \varepsilon_{ij}`),
and :math:`f = 1/(4\pi\varepsilon_0)` in OpenMM's own value (:func:`openmm_coulomb_constant`, read from OpenMM).

The implicit solvent :math:`E_\text{GB}` is OBC generalized Born with a surface-area term (Onufriev, Bashford &
Case 2004), as ``openmm.app`` writes it into a ``CustomGBForce`` for ``implicitSolvent=OBC1`` (or ``OBC2``):
with offset radii :math:`\rho_i`, scaled radii :math:`s_j`, :math:`\tilde\rho_i = \rho_i + \delta`,

.. math::
    I_i = \sum_{j \ne i} \mathbb 1[r + s_j \ge \rho_i]\, \tfrac12 \Bigl(\tfrac1L - \tfrac1U
        + \tfrac14 \bigl(r - \tfrac{s_j^2}{r}\bigr)\bigl(\tfrac1{U^2} - \tfrac1{L^2}\bigr)
        + \tfrac{1}{2r}\ln\tfrac LU\Bigr),\quad U = r + s_j,\ L = \max(\rho_i, |r - s_j|),

.. math::
    B_i = \Bigl(\tfrac1{\rho_i} - \tfrac{\tanh(\alpha\psi_i - \beta\psi_i^2 + \gamma\psi_i^3)}{\tilde\rho_i}\Bigr)^{-1},
    \quad \psi_i = I_i \rho_i,

.. math::
    E_\text{GB} = -\tfrac12 f' \Bigl(\tfrac1{\epsilon_\text{in}} - \tfrac1{\epsilon_\text{out}}\Bigr)
        \Bigl(\sum_i \frac{q_i^2}{B_i} + 2\sum_{i<j} \frac{q_i q_j}{f_{ij}}\Bigr)
        + \sum_i c_\text{SA} (\tilde\rho_i + r_\text{probe})^2 (\tilde\rho_i / B_i)^6,
    \quad f_{ij} = \sqrt{r_{ij}^2 + B_i B_j e^{-r_{ij}^2 / (4 B_i B_j)}}.

Every constant (:math:`\alpha, \beta, \gamma, \delta, f', \epsilon, c_\text{SA}, r_\text{probe}`) is parsed from
the force's own expressions, which must match the OBC templates exactly up to those numbers; any other
expression, force class, cutoff or periodic box raises :class:`ValueError` naming the force. A
``GBSAOBCForce`` (OpenMM's built-in OBC2) is read too. ``CMMotionRemover`` contributes no energy.

Reduced energies :math:`u = E / k_B T` (dimensionless) come from :meth:`TorchEnergy.forward`, energies and forces
:math:`-\partial E/\partial x` together from :meth:`TorchEnergy.potential_and_forces`. The gradient is analytic,
computed in the same pass as the energy (Note [analytic gradient]); autograd through ``forward`` / ``potential``
uses it (first derivatives), and :meth:`TorchEnergy.terms_kj` stays differentiable by autograd to any order.
Precision: the computation runs in the positions' dtype, float32 or float64; float16 and bfloat16 (and
anything that is not a ``torch.Tensor``, e.g. a numpy array) are refused with :class:`TypeError` naming it, as
reduced precision cannot resolve the energy (Note [reduced precision]). With
``bonded_float64=True`` and float32 positions the stiff bonded terms run in float64 (as OpenMM's mixed
precision does). Positions are centred on their mean per conformation first (energies are translation
invariant; centring keeps float32 round-off independent of where the molecule sits). A conformation with
non-finite positions gets NaN for its row only.

References: Krämer, Köhler & Noé, arXiv:2010.07033 (the Boltzmann generator this energy serves); Onufriev,
Bashford & Case, Proteins 55, 383 (2004) (OBC).

Example:
    >>> from p4lightning.systems.alanine import alanine_dipeptide
    >>> ala2 = alanine_dipeptide(600.0)
    >>> energy = TorchEnergy(ala2.system, temperature=600.0)
    >>> x = torch.as_tensor(ala2.positions)[None]          # (1, 22, 3) nm, float64
    >>> energy(x).shape
    torch.Size([1])
    >>> e, f = energy.potential_and_forces(x)            # kJ/mol (1,), kJ/(mol nm) (1, 22, 3)
    >>> f.shape
    torch.Size([1, 22, 3])
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, cast

import torch
from torch import nn

from p4lightning.systems.alanine import kt

__all__ = ["TorchEnergy", "openmm_coulomb_constant", "supported_forces"]

#: force classes this module evaluates (``CMMotionRemover`` contributes nothing)
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
    """Names of the OpenMM force classes :class:`TorchEnergy` evaluates."""
    return _SUPPORTED


#: position dtypes :class:`TorchEnergy` computes in (Note [reduced precision])
_DTYPES = (torch.float32, torch.float64)

# Note [reduced precision]: the energy is a sum of hundreds of terms of 10^1-10^3 kJ/mol resolved to a
# fraction of k_BT (~5 kJ/mol at 600 K). float16 cannot even hold the bond force constants (2.6-4.8e5
# kJ mol^-1 nm^-2 for alanine dipeptide; its largest value is 65504): they become inf and the bond energy NaN.
# bfloat16 keeps 8 significant bits (~3 decimal digits): on MD frames each term is off by 0.5-2.6 k_BT, the
# total by ~3 k_BT at 600 K. Both are refused, not upcast: a silent cast would hide that the caller's model
# runs in a precision its target energy cannot use.


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


# --- recognising the CustomGBForce of openmm.app's OBC1/OBC2 -----------------------------------------------
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def _template(text: str, names: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[str, ...]]:
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


def _match(
    template: tuple[re.Pattern[str], tuple[str, ...]], expression: str, consts: dict[str, float]
) -> bool:
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


class TorchEnergy(nn.Module):
    r"""Reduced potential energy :math:`u = E/k_B T` of an OpenMM ``System``, evaluated as batched torch algebra.

    Args:
        system: an ``openmm.System`` made of the forces in :func:`supported_forces`, without cutoffs, a
            periodic box, constraints or virtual sites (e.g. ``alanine_dipeptide().system``). Every parameter
            is read from it.
        temperature: :math:`T` in K of the reduced energy.
        bonded_float64: evaluate bonds, angles and torsions in float64 when positions are float32.

    Shapes:
        ``x``: ``(B, N, 3)`` or ``(B, 3N)`` in nm, a float32 or float64 ``torch.Tensor``, any device → ``u``:
        ``(B,)`` in the dtype of ``x``. ``B = 0`` gives an empty ``(0,)``.

    Raises:
        ValueError: a force class, nonbonded method, periodic box or custom expression it does not evaluate,
            named with the force; virtual sites, named with their particle indices; constraints.
        TypeError: (at evaluation) positions that are not a ``torch.Tensor``, or not float32/float64, named
            with their type or dtype.
    """

    def __init__(self, system: Any, temperature: float, bonded_float64: bool = False) -> None:
        super().__init__()
        import openmm

        self.kt = kt(temperature)
        self.temperature = float(temperature)
        self.bonded_float64 = bool(bonded_float64)
        self.n_atoms = int(system.getNumParticles())
        if self.n_atoms < 2:
            raise ValueError(f"system must have at least 2 particles; got {self.n_atoms}")
        if system.usesPeriodicBoundaryConditions():
            raise ValueError(
                "TorchEnergy evaluates non-periodic systems only; this System uses a periodic box"
            )
        if system.getNumConstraints() != 0:
            raise ValueError(
                f"TorchEnergy evaluates unconstrained systems only; this System has {system.getNumConstraints()} "
                "constraints (their bonds would be missing from the energy)"
            )
        virtual = [i for i in range(self.n_atoms) if system.isVirtualSite(i)]
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
        f64 = torch.float64
        self.terms: list[str] = []
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
                rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
                self._index("bond_idx", [(r[0], r[1]) for r in rows], 2)
                self.register_buffer("bond_r0", torch.tensor([_v(r[2]) for r in rows], dtype=f64))
                self.register_buffer("bond_k", torch.tensor([_v(r[3]) for r in rows], dtype=f64))
                self.terms.append("bond")
            elif isinstance(force, openmm.HarmonicAngleForce):
                rows = [force.getAngleParameters(i) for i in range(force.getNumAngles())]
                self._index("angle_idx", [(r[0], r[1], r[2]) for r in rows], 3)
                self.register_buffer("angle_t0", torch.tensor([_v(r[3]) for r in rows], dtype=f64))
                self.register_buffer("angle_k", torch.tensor([_v(r[4]) for r in rows], dtype=f64))
                self.terms.append("angle")
            elif isinstance(force, openmm.PeriodicTorsionForce):
                rows = [force.getTorsionParameters(i) for i in range(force.getNumTorsions())]
                self._index("torsion_idx", [(r[0], r[1], r[2], r[3]) for r in rows], 4)
                self.register_buffer("torsion_n", torch.tensor([float(r[4]) for r in rows], dtype=f64))
                self.register_buffer("torsion_phase", torch.tensor([_v(r[5]) for r in rows], dtype=f64))
                self.register_buffer("torsion_k", torch.tensor([_v(r[6]) for r in rows], dtype=f64))
                self.terms.append("torsion")
            elif isinstance(force, openmm.NonbondedForce):
                self._read_nonbonded(force, index)
                self.terms.append("nonbonded")
            elif isinstance(force, openmm.CustomGBForce):
                self._read_custom_gb(force, index)
                self.terms.append("gb")
            elif isinstance(force, openmm.GBSAOBCForce):
                self._read_gbsaobc(force, index)
                self.terms.append("gb")
        if "gb" in self.terms and "nonbonded" not in self.terms:
            raise ValueError("an implicit-solvent force needs the NonbondedForce that holds the charges")
        self._difference_vectors()
        pairs = self._pairs()  # (P, 2): every pair i < j once
        self.register_buffer("pair_i", pairs[:, 0].contiguous())
        self.register_buffer("pair_j", pairs[:, 1].contiguous())
        n_pairs = pairs.shape[0]
        one_hot = torch.zeros(2, n_pairs, self.n_atoms, dtype=torch.float64)
        one_hot[0, torch.arange(n_pairs), pairs[:, 0]] = 1.0
        one_hot[1, torch.arange(n_pairs), pairs[:, 1]] = 1.0
        # (P, N): pair p's vector x_i - x_j from the positions; its transpose returns pair gradients to the atoms
        self.register_buffer("pair_incidence", one_hot[0] - one_hot[1])
        # (N, 2P): sums over ordered pairs — column p adds to atom i of pair p, column P + p to its atom j
        self.register_buffer("pair_owner", torch.cat([one_hot[0], one_hot[1]]).T.contiguous())
        # conformations evaluated by forward() (a counter, so it is in state_dict like OpenMMEnergy's)
        self.register_buffer("num_evaluated", torch.zeros((), dtype=torch.long))

    # --- reading the System ------------------------------------------------------------------------------
    def _index(self, name: str, rows: list[tuple[int, ...]], width: int) -> None:
        idx = torch.tensor(rows, dtype=torch.long).reshape(-1, width)
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.n_atoms):
            raise ValueError(f"{name}: particle index out of range [0, {self.n_atoms})")
        self.register_buffer(name, idx)

    def _pairs(self) -> torch.Tensor:
        return torch.triu_indices(self.n_atoms, self.n_atoms, offset=1).T  # (P, 2), i < j

    def _difference_vectors(self) -> None:
        r"""The bonded terms' difference vectors :math:`x_\text{head} - x_\text{tail}`, all in one list.

        Rows: bonds :math:`x_i - x_j`; angles :math:`a = x_i - x_j`, then :math:`b = x_k - x_j`; torsions
        :math:`b_1 = x_j - x_i`, :math:`b_2 = x_k - x_j`, :math:`b_3 = x_l - x_k`. ``vec_incidence`` ``(K, N)``
        maps positions to them (+1 at the head, −1 at the tail), and its transpose maps a gradient in the
        vectors back to the atoms in one matrix product.
        """
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.vec_slices: dict[str, int] = {}  # first row of each term's vectors
        start = 0
        for term, name, pairs in (
            ("bond", "bond_idx", ((0, 1),)),
            ("angle", "angle_idx", ((0, 1), (2, 1))),
            ("torsion", "torsion_idx", ((1, 0), (2, 1), (3, 2))),
        ):
            if term not in self.terms:
                continue
            idx = getattr(self, name)
            self.vec_slices[term] = start
            for head, tail in pairs:
                pieces.append((idx[:, head], idx[:, tail]))
                start += idx.shape[0]
        empty = torch.zeros(0, dtype=torch.long)
        heads = torch.cat([h for h, _ in pieces]) if pieces else empty
        tails = torch.cat([t for _, t in pieces]) if pieces else empty
        incidence = torch.zeros(heads.shape[0], self.n_atoms, dtype=torch.float64)
        rows = torch.arange(heads.shape[0])
        incidence[rows, heads] += 1.0
        incidence[rows, tails] -= 1.0
        self.register_buffer("vec_head", heads)
        self.register_buffer("vec_tail", tails)
        self.register_buffer("vec_incidence", incidence)

    def _read_nonbonded(self, force: Any, index: int) -> None:
        import openmm

        if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
            raise ValueError(
                f"force {index} (NonbondedForce): nonbonded method {force.getNonbondedMethod()} is not supported; "
                "only NoCutoff (0)"
            )
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            raise ValueError(f"force {index} (NonbondedForce): parameter offsets are not supported")
        n = self.n_atoms
        params = [force.getParticleParameters(i) for i in range(n)]
        q = torch.tensor([_v(p[0]) for p in params], dtype=torch.float64)
        sig = torch.tensor([_v(p[1]) for p in params], dtype=torch.float64)
        eps = torch.tensor([_v(p[2]) for p in params], dtype=torch.float64)
        # per pair i < j (the order of _pairs()); excluded pairs have zero parameters (they contribute nothing)
        i, j = self._pairs().T
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
        self.register_buffer("nb_keep", keep)
        self.register_buffer("nb_qq", torch.where(keep, qq * openmm_coulomb_constant(), zero))
        self.register_buffer("nb_sigma", torch.where(keep, ss, zero))
        self.register_buffer("nb_4eps", torch.where(keep, 4.0 * ee, zero))

    def _gb_buffers(self, rho: torch.Tensor, scaled: torch.Tensor, consts: dict[str, float]) -> None:
        self.gb = {k: float(v) for k, v in consts.items()}
        self.register_buffer("gb_rho", rho)  # offset radius (nm)
        self.register_buffer("gb_scaled", scaled)  # scaled offset radius (nm)

    def _read_custom_gb(self, force: Any, index: int) -> None:
        where = f"force {index} (CustomGBForce)"
        if force.getNonbondedMethod() != 0:
            raise ValueError(
                f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff"
            )
        if force.getNumGlobalParameters() or force.getNumTabulatedFunctions() or force.getNumExclusions():
            raise ValueError(
                f"{where}: global parameters, tabulated functions and exclusions are not supported"
            )
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
        params = torch.tensor(
            [list(force.getParticleParameters(i)) for i in range(self.n_atoms)], dtype=torch.float64
        )
        self.register_buffer("gb_charge", params[:, 0])
        self._gb_buffers(params[:, 1], params[:, 2], consts)

    def _read_gbsaobc(self, force: Any, index: int) -> None:
        import openmm

        where = f"force {index} (GBSAOBCForce)"
        if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
            raise ValueError(
                f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff"
            )
        offset = 0.009
        rows = [force.getParticleParameters(i) for i in range(self.n_atoms)]
        charge = torch.tensor([_v(r[0]) for r in rows], dtype=torch.float64)
        radius = torch.tensor([_v(r[1]) for r in rows], dtype=torch.float64)
        scale = torch.tensor([float(r[2]) for r in rows], dtype=torch.float64)
        rho = radius - offset
        # GBSAOBCForce: OBC2 constants, surface-area energy per nm^2 as set on the force
        consts = {
            "alpha": 1.0, "beta": 0.8, "gamma": 4.85, "offset": offset, "coul": openmm_coulomb_constant(),
            "eps_in": force.getSoluteDielectric(), "eps_out": force.getSolventDielectric(), "kappa": 0.0,
            "sa": 4 * math.pi * _v(force.getSurfaceAreaEnergy()), "probe": 0.14,
        }  # fmt: skip
        self.register_buffer("gb_charge", charge)
        self._gb_buffers(rho, rho * scale, consts)

    # --- evaluation -----------------------------------------------------------------------------------------
    # Note [batch last]: every term works on positions laid out (3, N, B) — the batch innermost and contiguous —
    # and on 3-vectors held as three (K, B) components (_Vec), never as (K, 3, B) arrays. Gathering atoms
    # (x[i]) then reads whole rows, and every per-term array is (K, B): the elementwise work and the sums over
    # atoms run along B in vectorised loops. The layout is pinned in a buffer of its own (empty + copy_):
    # under torch.compile a plain permute is fused into its readers, and Inductor then laid the (K, 3, B)
    # intermediates out as (K, B, 3) and read them 3 floats at a time, in scalar gathers.
    #
    # Note [analytic gradient]: dE/dx is written out next to each energy (chain rule through r, theta, phi and
    # the Born radii; formulas in the docstrings) and computed in the same pass, so energy + forces is one
    # forward graph with no autograd tape (potential_and_forces; potential/forward through _AnalyticGradient).
    # Sums over atoms are matrix products with constant incidence matrices (bonded vectors -> atoms, pairs ->
    # atoms, ordered pairs -> their owner atom for the Born integrals and dE/dB): Inductor writes each
    # index_add as a scalar loop on the CPU, and with them the compiled analytic path lost to autograd by more.
    # Against autograd through the same expressions (benchmarks/energy/energy_throughput.py --torch-energy and
    # benchmarks/energy/torch_energy_gpu.py, "compiled" vs "compiled, autograd"; results in docs/benchmarks/
    # torch_energy_gpu.md and torch_energy.md): the analytic path wins on a GPU and, on a CPU, eager and in
    # float64; it loses compiled in float32 on a CPU, where the energy is a small part of a Boltzmann
    # generator's energy-phase step (docs/benchmarks/bg_energy_step.md). One path, the
    # analytic one; terms_kj stays differentiable by autograd, the tests' reference for the analytic gradient.
    def _column(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Parameter buffer ``name`` with a trailing batch axis, in ``like``'s dtype (broadcasts over the batch)."""
        return getattr(self, name).to(dtype=like.dtype)[..., None]

    def _bonded(self, xt: torch.Tensor, grad: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        r"""Bond, angle and torsion energies (kJ/mol) ``(B,)`` of positions ``xt`` ``(3, N, B)`` nm.

        With ``grad``, also :math:`\partial E/\partial x` ``(3, N, B)`` (kJ mol⁻¹ nm⁻¹), from the gradient in
        each difference vector (:meth:`_difference_vectors`): bonds :math:`k (r - r_0)\, d / r`; angles
        :math:`\partial\theta/\partial a = a \times p / (|a|^2 |p|)`,
        :math:`\partial\theta/\partial b = p \times b / (|b|^2 |p|)`, :math:`p = a \times b` (zero for
        exactly collinear atoms, where :math:`\theta = \pi` is a cusp); torsions (Blondel & Karplus,
        J. Comput. Chem. 17, 1132, 1996) with :math:`n_1 = b_1 \times b_2`, :math:`n_2 = b_2 \times b_3`:
        :math:`\partial\varphi/\partial b_1 = |b_2| n_1 / n_1^2`, :math:`\partial\varphi/\partial b_3 =
        |b_2| n_2 / n_2^2`, :math:`\partial\varphi/\partial b_2 = -\frac{b_1 \cdot b_2}{|b_2|^2}
        \partial\varphi/\partial b_1 - \frac{b_3 \cdot b_2}{|b_2|^2} \partial\varphi/\partial b_3`.
        Vectors are triples of ``(K, B)`` components (Note [batch last]).
        """
        out: dict[str, torch.Tensor] = {}
        if not self.vec_slices:
            return out, (torch.zeros_like(xt) if grad else None)
        vec = tuple(c[self.vec_head] - c[self.vec_tail] for c in xt)  # 3 x (K, B)
        parts: list[_Vec] = []

        def rows(term: str, m: int, n: int) -> _Vec:
            first = self.vec_slices[term] + m * n
            return vec[0][first : first + n], vec[1][first : first + n], vec[2][first : first + n]

        if "bond" in self.terms:
            d = rows("bond", 0, self.bond_idx.shape[0])
            r = _norm(d)  # (K, B)
            k, stretch = self._column("bond_k", r), r - self._column("bond_r0", r)
            out["bond"] = (0.5 * k * stretch.square()).sum(0)
            if grad:
                parts.append(_scale(k * stretch / r, d))
        if "angle" in self.terms:
            n = self.angle_idx.shape[0]
            a, b = rows("angle", 0, n), rows("angle", 1, n)
            p = _cross(a, b)
            p_norm = _norm(p)
            theta = torch.atan2(p_norm, _dot(a, b))
            k, bend = self._column("angle_k", theta), theta - self._column("angle_t0", theta)
            out["angle"] = (0.5 * k * bend.square()).sum(0)
            if grad:
                scale = k * bend / p_norm
                scale = torch.where(
                    p_norm == 0, torch.zeros_like(scale), scale
                )  # theta = pi: a cusp, no force
                parts.append(_scale(scale / _dot(a, a), _cross(a, p)))
                parts.append(_scale(scale / _dot(b, b), _cross(p, b)))
        if "torsion" in self.terms:
            n = self.torsion_idx.shape[0]
            b1, b2, b3 = (rows("torsion", m, n) for m in range(3))
            n1, n2 = _cross(b1, b2), _cross(b2, b3)
            b2_sq = _dot(b2, b2)
            b2_norm = b2_sq.sqrt()
            phi = torch.atan2(_dot(_cross(n1, n2), b2) / b2_norm, _dot(n1, n2))
            n_t, k_t = self._column("torsion_n", phi), self._column("torsion_k", phi)
            arg = n_t * phi - self._column("torsion_phase", phi)
            out["torsion"] = (k_t * (1.0 + torch.cos(arg))).sum(0)
            if grad:
                dphi = -k_t * n_t * torch.sin(arg) * b2_norm  # dE/dphi |b2|, (K, B)
                g1, g3 = _scale(dphi / _dot(n1, n1), n1), _scale(dphi / _dot(n2, n2), n2)
                c1, c3 = _dot(b1, b2) / b2_sq, _dot(b3, b2) / b2_sq
                parts += [g1, tuple(-c1 * u - c3 * w for u, w in zip(g1, g3, strict=True)), g3]
        if not grad:
            return out, None
        g_vec = torch.stack([torch.cat([part[c] for part in parts]) for c in range(3)])  # (3, K, B)
        return out, self.vec_incidence.to(xt.dtype).T @ g_vec  # (3, N, B)

    def _nonbonded(self, r: torch.Tensor, dedr: torch.Tensor | None) -> torch.Tensor:
        r"""Coulomb + Lennard-Jones (kJ/mol) ``(B,)`` from the pair distances ``r`` ``(P, B)`` nm (pairs i < j).

        With ``dedr`` ``(P, B)`` given, adds :math:`\partial e_{ij}/\partial r = -f q_{ij}/r^2
        - 4\varepsilon (12 s^{12} - 6 s^6)/r` (:math:`s = \sigma/r`) into it.
        """
        r = torch.where(self.nb_keep[:, None], r, torch.ones_like(r))  # excluded pairs: finite, weight 0
        s6 = (self._column("nb_sigma", r) / r).pow(6)
        coulomb, four_eps = self._column("nb_qq", r) / r, self._column("nb_4eps", r)
        if dedr is not None:
            dedr.sub_((coulomb + four_eps * (12 * s6.square() - 6 * s6)) / r)
        return (coulomb + four_eps * (s6.square() - s6)).sum(0)

    def _gb(self, r: torch.Tensor, dedr: torch.Tensor | None) -> torch.Tensor:
        r"""OBC generalized-Born solvation + surface area (kJ/mol) ``(B,)`` from the pair distances ``r`` ``(P, B)``.

        The Born integral :math:`I_i` sums over ordered pairs: each pair i < j once as (owner i, sphere j) and
        once as (owner j, sphere i), summed to the owners by ``pair_owner``. With ``dedr`` given, adds
        :math:`\partial E/\partial r_{ij}` into it: the explicit pair term
        :math:`\partial e_{ij}/\partial f \cdot r (1 - e^{-r^2/4B_iB_j}/4)/f`, and, through the Born radii,
        :math:`g_{ij} + g_{ji}` with :math:`g_{ij} = (\partial E/\partial B_i)(\mathrm dB_i/\mathrm dI_i)\,
        \partial(\text{term}_{ij})/\partial r`, :math:`\mathrm dB/\mathrm dI = B^2 (1 - t^2)(\alpha - 2\beta\psi
        + 3\gamma\psi^2)\rho/\tilde\rho`, and :math:`\partial E/\partial B_i` from the self, surface and pair
        energies (:math:`\partial f/\partial(B_iB_j) = e^{-r^2/4B_iB_j} (1 + r^2/4B_iB_j)/2f`).
        """
        c = self.gb
        pi, pj = self.pair_i, self.pair_j
        n_pairs = r.shape[0]
        owner = self.pair_owner.to(r.dtype)  # (N, 2P)
        rho, s = self._column("gb_rho", r), self._column("gb_scaled", r)  # (N, 1)
        rho_i, s_j = torch.cat([rho[pi], rho[pj]]), torch.cat([s[pj], s[pi]])  # (2P, 1): owner, sphere
        r2p = torch.cat([r, r])  # (2P, B)
        upper = r2p + s_j
        diff = r2p - s_j
        lower = torch.maximum(rho_i, diff.abs())
        inv_l, inv_u, inv_r = 1 / lower, 1 / upper, 1 / r2p
        log_lu = torch.log(lower / upper)
        shell = r2p - s_j.square() * inv_r
        term = 0.5 * (inv_l - inv_u + 0.25 * shell * (inv_u.square() - inv_l.square()) + 0.5 * log_lu * inv_r)
        active = upper - rho_i >= 0
        integral = owner @ torch.where(active, term, torch.zeros_like(term))  # (N, B)
        psi = integral * rho
        radius = rho + c["offset"]
        t = torch.tanh(c["alpha"] * psi - c["beta"] * psi.square() + c["gamma"] * psi.pow(3))
        born = 1 / (1 / rho - t / radius)  # (N, B)
        q = self._column("gb_charge", r)
        pre = c["coul"] * (1 / c["eps_in"] - 1 / c["eps_out"])
        e_self = -0.5 * pre * q.square() / born  # (N, B)
        e_sa = c["sa"] * (radius + c["probe"]).square() * (radius / born).pow(6)
        r2 = r.square()
        born_i, born_j = born[pi], born[pj]  # (P, B)
        bb = born_i * born_j
        damp = torch.exp(-r2 / (4 * bb))
        f = torch.sqrt(r2 + bb * damp)
        qq = q[pi] * q[pj]  # (P, 1)
        if dedr is not None:
            de_df = pre * qq / f.square()  # (P, B)
            c_bb = de_df * damp * (1 + r2 / (4 * bb)) / (2 * f)  # dE/d(B_i B_j)
            de_db = (-e_self - 6 * e_sa) / born + owner @ torch.cat([c_bb * born_j, c_bb * born_i])  # (N, B)
            db_di = (
                born.square()
                * (1 - t.square())
                * (c["alpha"] - 2 * c["beta"] * psi + 3 * c["gamma"] * psi.square())
                * rho
                / radius
            )
            de_di = de_db * db_di
            d_lower = torch.where(diff.abs() > rho_i, torch.sign(diff), torch.zeros_like(diff))
            d_term = 0.5 * (
                -d_lower * inv_l.square() + inv_u.square()
                + 0.25 * (1 + s_j.square() * inv_r.square()) * (inv_u.square() - inv_l.square())
                + 0.5 * shell * (d_lower * inv_l.pow(3) - inv_u.pow(3))
                + 0.5 * (d_lower * inv_l - inv_u) * inv_r
                - 0.5 * log_lu * inv_r.square()
            )  # fmt: skip
            g = torch.where(active, d_term, torch.zeros_like(d_term)) * torch.cat([de_di[pi], de_di[pj]])
            dedr.add_(de_df * r * (1 - 0.25 * damp) / f + g[:n_pairs] + g[n_pairs:])
        return (e_self + e_sa).sum(0) + (-pre * qq / f).sum(0)

    def _evaluate(self, x: torch.Tensor, grad: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        r"""Each force's energy (kJ/mol) ``(B,)`` and, with ``grad``, :math:`\partial E/\partial x` shaped like ``x``."""
        centred = self._positions(x)
        # (3, N, B): Note [batch last], in a buffer of its own (a plain permute would be fused into its readers)
        xt = torch.empty((3, self.n_atoms, x.shape[0]), dtype=x.dtype, device=x.device)
        xt.copy_(centred.permute(2, 1, 0))
        out: dict[str, torch.Tensor] = {}
        if xt.dtype == torch.float32 and self.bonded_float64:
            bonded, g = self._bonded(xt.double(), grad)
            out.update({k: v.to(torch.float32) for k, v in bonded.items()})
            g = g.to(torch.float32) if g is not None else None
        else:
            out, g = self._bonded(xt, grad)
        if "nonbonded" in self.terms or "gb" in self.terms:
            d = tuple(c[self.pair_i] - c[self.pair_j] for c in xt)  # 3 x (P, B)
            r = _norm(d)  # (P, B): every distance once
            dedr = torch.zeros_like(r) if grad else None
            if "nonbonded" in self.terms:
                out["nonbonded"] = self._nonbonded(r, dedr)
            if "gb" in self.terms:
                out["gb"] = self._gb(r, dedr)
            if g is not None and dedr is not None:  # g_i += (dE/dr_ij / r_ij) d_ij, g_j -= the same
                w = dedr / r
                g = g + self.pair_incidence.to(xt.dtype).T @ torch.stack([w * c for c in d])
        if g is None:
            return out, None
        g = g - g.mean(dim=1, keepdim=True)  # through the centring: E is translation invariant
        return out, g.permute(2, 1, 0).reshape(x.shape)

    def terms_kj(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each force's potential energy in kJ/mol, ``{"bond", "angle", "torsion", "nonbonded", "gb"}`` → ``(B,)``.

        Differentiable by autograd through the energy expressions themselves (to any order; in eager mode slower
        than :meth:`potential`, whose gradient is analytic and first order).
        """
        return self._evaluate(x, grad=False)[0]

    def potential_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Potential energy :math:`E` (kJ/mol) ``(B,)`` and forces :math:`-\partial E/\partial x` (kJ mol⁻¹ nm⁻¹)
        shaped like ``x``, as OpenMM's ``getState(getEnergy=True, getForces=True)``; no autograd graph."""
        with torch.no_grad():
            terms, g = self._evaluate(x, grad=True)
            return self._total(terms, x), -cast(torch.Tensor, g)  # with grad=True, g is a tensor

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Potential energy :math:`E` in kJ/mol, shape ``(B,)``; differentiable in ``x`` through the analytic
        gradient (first order; Note [analytic gradient])."""
        self._check_type(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self._total(self._evaluate(x, grad=False)[0], x)
        with torch.no_grad():
            terms, g = self._evaluate(x.detach(), grad=True)
        return _AnalyticGradient.apply(self._total(terms, x), x, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""Reduced energy :math:`u = E / k_B T`, shape ``(B,)``; forces by autograd (:math:`-k_BT\,\partial u/\partial x`)."""
        u = self.potential(x) / self.kt
        with torch.no_grad():
            self.num_evaluated += u.shape[0]
        return u

    @property
    def device(self) -> torch.device:
        """The device of the parameter buffers, where positions are evaluated."""
        return self.num_evaluated.device

    @staticmethod
    def _total(terms: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if not terms:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return torch.stack(list(terms.values()), 0).sum(0)

    def _check_type(self, x: torch.Tensor) -> None:
        """Refuse ``x`` that is not a float32/float64 ``torch.Tensor`` (Note [reduced precision]), naming it.

        Python-level checks on the type and dtype: under ``torch.compile`` they become guards, not graph
        breaks.
        """
        if not isinstance(x, torch.Tensor):
            kind = type(x)
            name = (
                kind.__qualname__
                if kind.__module__ == "builtins"
                else f"{kind.__module__}.{kind.__qualname__}"
            )
            raise TypeError(
                f"TorchEnergy takes a torch.Tensor of positions (B, {self.n_atoms}, 3) nm; got {name}"
            )
        if x.dtype not in _DTYPES:
            why = (
                " (reduced precision cannot resolve the energy: float16 overflows on the bond force "
                "constants, bfloat16's ~3 significant digits leave it k_BT off)"
                if x.is_floating_point()
                else ""
            )
            raise TypeError(
                f"TorchEnergy computes in float32 or float64; got positions of dtype {x.dtype}{why}; "
                "pass float32 or float64 (e.g. x.float())"
            )

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        self._check_type(x)
        if x.dim() == 2 and x.shape[1] == 3 * self.n_atoms:
            x = x.reshape(x.shape[0], self.n_atoms, 3)
        if x.dim() != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"positions must have shape (B, {self.n_atoms}, 3) or (B, {3 * self.n_atoms}) in nm "
                f"(the system has {self.n_atoms} atoms); got shape {tuple(x.shape)}"
            )
        return x - x.mean(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, temperature={self.temperature}, terms={self.terms}"


_Vec = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a 3-vector as its components, each (K, B)


def _dot(a: _Vec, b: _Vec) -> torch.Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _norm(a: _Vec) -> torch.Tensor:
    return _dot(a, a).sqrt()


def _cross(a: _Vec, b: _Vec) -> _Vec:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def _scale(s: torch.Tensor, a: _Vec) -> _Vec:
    return s * a[0], s * a[1], s * a[2]


class _AnalyticGradient(torch.autograd.Function):
    """``energy`` ``(B,)`` with the precomputed gradient ``grad`` (shaped like ``x``) as its derivative in ``x``."""

    @staticmethod
    def forward(energy: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return energy.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            raise RuntimeError(
                "TorchEnergy's gradient is analytic and first order: no second derivatives through potential() or "
                "forward(); use terms_kj(), which autograd differentiates to any order"
            )
        # Note [zero weight, zero gradient]: a row whose energy carries no weight (capped, dropped, not finite)
        # contributes exactly 0, even where its forces are not finite (0 * NaN would poison every parameter)
        g = grad_out.reshape((-1,) + (1,) * (grad.dim() - 1))
        return None, torch.where(g == 0, 0.0, g * grad), None


def openmm_gb_types() -> tuple[int, int]:
    """``(ParticlePairNoExclusions, SingleParticle)`` computation types of ``openmm.CustomGBForce``."""
    import openmm

    return int(openmm.CustomGBForce.ParticlePairNoExclusions), int(openmm.CustomGBForce.SingleParticle)


def _v(quantity: Any) -> float:
    """A value in OpenMM's MD units (nm, kJ/mol, rad, e) as a float."""
    return float(quantity._value if hasattr(quantity, "_value") else quantity)
