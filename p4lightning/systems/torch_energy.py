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

Reduced energies :math:`u = E / k_B T` (dimensionless) come from :meth:`TorchEnergy.forward`; forces
:math:`-\partial E/\partial x` by autograd. Precision: the computation runs in the positions' dtype; with
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
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

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
    _template("1/(1/or-tanh({alpha}*psi+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}", _CONSTS),
    _template(
        "1/(1/or-tanh({alpha}*psi-{beta}*psi^2+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}",
        _CONSTS,
    ),
    _template("1/(1/or-tanh(psi-{beta}*psi^2+{gamma}*psi^3)/radius);psi=I*or; radius=or+offset; offset={offset}", _CONSTS),
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


def _match(template: tuple[re.Pattern[str], tuple[str, ...]], expression: str, consts: dict[str, float]) -> bool:
    """Match ``expression`` against ``template``; record its numbers in ``consts`` (they must agree)."""
    pattern, slots = template
    m = pattern.match(expression.replace(" ", ""))
    if m is None:
        return False
    for name, value in zip(slots, m.groups(), strict=True):
        v = float(value)
        if name in consts and not math.isclose(consts[name], v, rel_tol=1e-12, abs_tol=1e-15):
            raise ValueError(f"CustomGBForce: constant {name} is {consts[name]} in one term and {v} in another")
        consts[name] = v
    return True


class TorchEnergy(nn.Module):
    r"""Reduced potential energy :math:`u = E/k_B T` of an OpenMM ``System``, evaluated as batched torch algebra.

    Args:
        system: an ``openmm.System`` made of the forces in :func:`supported_forces`, without cutoffs or a
            periodic box (e.g. ``alanine_dipeptide().system``). Every parameter is read from it.
        temperature: :math:`T` in K of the reduced energy.
        bonded_float64: evaluate bonds, angles and torsions in float64 when positions are float32.

    Shapes:
        ``x``: ``(B, N, 3)`` or ``(B, 3N)`` in nm, float32 or float64, any device → ``u``: ``(B,)`` in the
        dtype of ``x``. ``B = 0`` gives an empty ``(0,)``.

    Raises:
        ValueError: a force class, nonbonded method, periodic box or custom expression it does not evaluate,
            named with the force.
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
            raise ValueError("TorchEnergy evaluates non-periodic systems only; this System uses a periodic box")
        if system.getNumConstraints() != 0:
            raise ValueError(
                f"TorchEnergy evaluates unconstrained systems only; this System has {system.getNumConstraints()} "
                "constraints (their bonds would be missing from the energy)"
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
        self.register_buffer("pair_idx", self._pairs())  # (N(N-1)/2, 2): every pair i < j
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
        pairs = self._pairs()
        i, j = pairs[:, 0], pairs[:, 1]
        qq = q[i] * q[j]
        ss = 0.5 * (sig[i] + sig[j])
        ee = torch.sqrt(eps[i] * eps[j])
        lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs.tolist())}
        for e in range(force.getNumExceptions()):
            a, b, cq, cs, ce = force.getExceptionParameters(e)
            k = lookup[(min(a, b), max(a, b))]
            qq[k], ss[k], ee[k] = _v(cq), _v(cs), _v(ce)
        keep = (qq != 0) | (ee != 0)  # excluded pairs contribute nothing
        self.register_buffer("nb_sel", torch.nonzero(keep).flatten())  # columns of the all-pairs distances
        self.register_buffer("nb_qq", qq[keep] * openmm_coulomb_constant())
        self.register_buffer("nb_sigma", ss[keep])
        self.register_buffer("nb_4eps", 4.0 * ee[keep])
        self.register_buffer("charge", q)

    def _gb_buffers(self, rho: torch.Tensor, scaled: torch.Tensor, consts: dict[str, float]) -> None:
        self.gb = {k: float(v) for k, v in consts.items()}
        self.register_buffer("gb_rho", rho)  # offset radius (nm)
        self.register_buffer("gb_scaled", scaled)  # scaled offset radius (nm)
        # the I-sum runs over ordered pairs (i, j), i != j: each unordered pair's distance serves both directions
        pi, pj = self._pairs().T
        self.register_buffer("gb_first", torch.cat([pi, pj]))  # the atom whose I the term adds to
        self.register_buffer("gb_second", torch.cat([pj, pi]))  # the atom whose scaled sphere it integrates

    def _read_custom_gb(self, force: Any, index: int) -> None:
        where = f"force {index} (CustomGBForce)"
        if force.getNonbondedMethod() != 0:
            raise ValueError(f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff")
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
        params = torch.tensor([list(force.getParticleParameters(i)) for i in range(self.n_atoms)], dtype=torch.float64)
        self.register_buffer("gb_charge", params[:, 0])
        self._gb_buffers(params[:, 1], params[:, 2], consts)

    def _read_gbsaobc(self, force: Any, index: int) -> None:
        import openmm

        where = f"force {index} (GBSAOBCForce)"
        if force.getNonbondedMethod() != openmm.GBSAOBCForce.NoCutoff:
            raise ValueError(f"{where}: nonbonded method {force.getNonbondedMethod()} is not supported; only NoCutoff")
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
    # Note [batch last]: every term works on positions laid out (N, 3, B) — the batch innermost and contiguous —
    # so gathering atoms (xt[i]) picks whole rows and each per-term array is (K, B): elementwise work and the
    # backward's index_add over atoms run along B in vectorised loops. With (B, N, 3) a gather reads 3 floats per
    # conformation; the compiled energy + forces took 1.5x as long (benchmarks/energy_throughput.py --torch-energy).
    def _column(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Parameter buffer ``name`` ``(K,)`` as a ``(K, 1)`` column in ``like``'s dtype (broadcast over the batch)."""
        return getattr(self, name).to(dtype=like.dtype)[:, None]

    def _bonded(self, xt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bond, angle and torsion energies (kJ/mol) ``(B,)`` of positions ``xt`` ``(N, 3, B)`` nm."""
        out: dict[str, torch.Tensor] = {}
        if "bond" in self.terms:
            i, j = self.bond_idx.T
            r = torch.linalg.vector_norm(xt[i] - xt[j], dim=1)  # (K, B)
            out["bond"] = (0.5 * self._column("bond_k", r) * (r - self._column("bond_r0", r)).square()).sum(0)
        if "angle" in self.terms:
            i, j, k = self.angle_idx.T
            a, b = xt[i] - xt[j], xt[k] - xt[j]  # (K, 3, B)
            theta = torch.atan2(torch.linalg.vector_norm(torch.cross(a, b, dim=1), dim=1), (a * b).sum(1))
            out["angle"] = (
                0.5 * self._column("angle_k", theta) * (theta - self._column("angle_t0", theta)).square()
            ).sum(0)
        if "torsion" in self.terms:
            i, j, k, l = self.torsion_idx.T  # noqa: E741
            b1, b2, b3 = xt[j] - xt[i], xt[k] - xt[j], xt[l] - xt[k]
            n1, n2 = torch.cross(b1, b2, dim=1), torch.cross(b2, b3, dim=1)
            y = (torch.cross(n1, n2, dim=1) * b2).sum(1) / torch.linalg.vector_norm(b2, dim=1)
            phi = torch.atan2(y, (n1 * n2).sum(1))
            arg = self._column("torsion_n", phi) * phi - self._column("torsion_phase", phi)
            out["torsion"] = (self._column("torsion_k", phi) * (1.0 + torch.cos(arg))).sum(0)
        return out

    def _nonbonded(self, r_all: torch.Tensor) -> torch.Tensor:
        """Coulomb + Lennard-Jones (kJ/mol) ``(B,)`` from every pair distance ``r_all`` ``(P, B)`` nm."""
        r = r_all[self.nb_sel]
        s6 = (self._column("nb_sigma", r) / r).pow(6)
        return (self._column("nb_qq", r) / r + self._column("nb_4eps", r) * (s6.square() - s6)).sum(0)

    def _gb(self, r_all: torch.Tensor) -> torch.Tensor:
        """OBC generalized-Born solvation + surface area (kJ/mol) ``(B,)`` from ``r_all`` ``(P, B)`` nm."""
        c = self.gb
        i = self.gb_first
        r = torch.cat([r_all, r_all], dim=0)  # (2P, B): both directions of every pair
        rho, s = self._column("gb_rho", r_all), self._column("gb_scaled", r_all)  # (N, 1)
        rho_i, s_j = rho[i], s[self.gb_second]  # (2P, 1)
        upper = r + s_j
        lower = torch.maximum(rho_i.expand_as(r), (r - s_j).abs())
        term = 0.5 * (
            1 / lower - 1 / upper
            + 0.25 * (r - s_j.square() / r) * (1 / upper.square() - 1 / lower.square())
            + 0.5 * torch.log(lower / upper) / r
        )
        term = torch.where(upper - rho_i >= 0, term, torch.zeros_like(term))
        integral = r_all.new_zeros(self.n_atoms, r_all.shape[1]).index_add_(0, i, term)  # (N, B)
        psi = integral * rho
        radius = rho + c["offset"]
        born = 1 / (1 / rho - torch.tanh(c["alpha"] * psi - c["beta"] * psi.square() + c["gamma"] * psi.pow(3)) / radius)
        q = self._column("gb_charge", r_all)
        pre = c["coul"] * (1 / c["eps_in"] - 1 / c["eps_out"])
        e_self = (-0.5 * pre * q.square() / born).sum(0)
        e_sa = (c["sa"] * (radius + c["probe"]).square() * (radius / born).pow(6)).sum(0)
        pi, pj = self.pair_idx.T
        r2 = r_all.square()
        bb = born[pi] * born[pj]  # (P, B)
        f = torch.sqrt(r2 + bb * torch.exp(-r2 / (4 * bb)))
        e_pair = (-pre * q[pi] * q[pj] / f).sum(0)
        return e_self + e_sa + e_pair

    def terms_kj(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each force's potential energy in kJ/mol, ``{"bond", "angle", "torsion", "nonbonded", "gb"}`` → ``(B,)``."""
        xt = self._positions(x).permute(1, 2, 0)  # (N, 3, B): Note [batch last]
        out: dict[str, torch.Tensor] = {}
        if xt.dtype == torch.float32 and self.bonded_float64:
            out.update({k: v.to(torch.float32) for k, v in self._bonded(xt.double()).items()})
        else:
            out.update(self._bonded(xt))
        if "nonbonded" in self.terms or "gb" in self.terms:
            pi, pj = self.pair_idx.T
            r_all = torch.linalg.vector_norm(xt[pi] - xt[pj], dim=1)  # (N(N-1)/2, B): every distance once
            if "nonbonded" in self.terms:
                out["nonbonded"] = self._nonbonded(r_all)
            if "gb" in self.terms:
                out["gb"] = self._gb(r_all)
        return out

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Potential energy :math:`E` in kJ/mol, shape ``(B,)``."""
        terms = self.terms_kj(x)
        if not terms:
            return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return torch.stack(list(terms.values()), 0).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy :math:`u = E / k_B T`, shape ``(B,)``; forces by autograd (:math:`-k_BT\\,\\partial u/\\partial x`)."""
        u = self.potential(x) / self.kt
        with torch.no_grad():
            self.num_evaluated += u.shape[0]
        return u

    def _positions(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"positions must be a floating-point tensor of shape (B, {self.n_atoms}, 3) nm")
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


def openmm_gb_types() -> tuple[int, int]:
    """``(ParticlePairNoExclusions, SingleParticle)`` computation types of ``openmm.CustomGBForce``."""
    import openmm

    return int(openmm.CustomGBForce.ParticlePairNoExclusions), int(openmm.CustomGBForce.SingleParticle)


def _v(quantity: Any) -> float:
    """A value in OpenMM's MD units (nm, kJ/mol, rad, e) as a float."""
    return float(quantity._value if hasattr(quantity, "_value") else quantity)
