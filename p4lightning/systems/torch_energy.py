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
Case 2004), as ``openmm.app`` writes it into a ``CustomGBForce`` for ``implicitSolvent=OBC1`` (or ``OBC2``); its
formulas (Born radii, the pair and self terms, the surface area) are stated once, with the function that
evaluates them: :func:`~p4lightning.systems.terms.obc_energy`.

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

Layout: :mod:`~p4lightning.systems.forcefield` reads the System into typed parameter records (and refuses what
it cannot evaluate), :mod:`~p4lightning.systems.terms` holds each functional form as a pure function with its
analytic gradient, and :class:`TorchEnergy` keeps the records' tensors as buffers, gathers the geometry the terms
take (batch last, Note [batch last]) and sums energies and gradients.

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

from typing import Any, cast

import torch
from torch import nn

from p4lightning.systems.alanine import kt
from p4lightning.systems.forcefield import (
    AngleTerm,
    BondTerm,
    ForceField,
    GBSAOBCTerm,
    NonbondedTerm,
    OBCConstants,
    TorsionTerm,
    openmm_coulomb_constant,
    pair_indices,
    read_system,
    supported_forces,
)
from p4lightning.systems.terms import (
    ANGLE_VECTORS,
    BOND_VECTORS,
    TORSION_VECTORS,
    Vec,
    angle_energy,
    bond_energy,
    nonbonded_energy,
    norm,
    obc_energy,
    torsion_energy,
)

__all__ = ["TorchEnergy", "openmm_coulomb_constant", "supported_forces"]

#: position dtypes :class:`TorchEnergy` computes in (Note [reduced precision])
_DTYPES = (torch.float32, torch.float64)

# Note [reduced precision]: the energy is a sum of hundreds of terms of 10^1-10^3 kJ/mol resolved to a
# fraction of k_BT (~5 kJ/mol at 600 K). float16 cannot even hold the bond force constants (2.6-4.8e5
# kJ mol^-1 nm^-2 for alanine dipeptide; its largest value is 65504): they become inf and the bond energy NaN.
# bfloat16 keeps 8 significant bits (~3 decimal digits): on MD frames each term is off by 0.5-2.6 k_BT, the
# total by ~3 k_BT at 600 K. Both are refused, not upcast: a silent cast would hide that the caller's model
# runs in a precision its target energy cannot use.


class TorchEnergy(nn.Module):
    r"""Reduced potential energy :math:`u = E/k_B T` of an OpenMM ``System``, evaluated as batched torch algebra.

    Args:
        system: an ``openmm.System`` made of the forces in :func:`supported_forces`, without cutoffs, a
            periodic box, constraints or virtual sites (e.g. ``alanine_dipeptide().system``). Every parameter
            is read from it (:func:`~p4lightning.systems.forcefield.read_system`); a
            :class:`~p4lightning.systems.forcefield.ForceField` already read is taken as it is.
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
        ff = system if isinstance(system, ForceField) else read_system(system)
        self.kt = kt(temperature)
        self.temperature = float(temperature)
        self.bonded_float64 = bool(bonded_float64)
        self.n_atoms = ff.n_atoms
        self.terms: list[str] = list(ff.terms)
        # the records' tensors as buffers (they follow .to(device)), under the names state_dict has always had
        if ff.bonds is not None:
            self._buffers_of(ff.bonds, bond_idx="index", bond_r0="r0", bond_k="k")
        if ff.angles is not None:
            self._buffers_of(ff.angles, angle_idx="index", angle_t0="theta0", angle_k="k")
        if ff.torsions is not None:
            self._buffers_of(
                ff.torsions,
                torsion_idx="index",
                torsion_n="periodicity",
                torsion_phase="phase",
                torsion_k="k",
            )
        if ff.nonbonded is not None:
            self._buffers_of(ff.nonbonded, nb_keep="keep", nb_qq="qq", nb_sigma="sigma", nb_4eps="four_eps")
        self.gb = ff.gb.constants if ff.gb is not None else None
        if ff.gb is not None:
            self._buffers_of(ff.gb, gb_charge="charge", gb_rho="rho", gb_scaled="scaled")
        self._difference_vectors()
        pairs = pair_indices(self.n_atoms)  # (P, 2): every pair i < j once
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

    # --- the records, as buffers ----------------------------------------------------------------------------
    # The records' tensors live in buffers (copies: the module may be moved or edited in place without touching
    # the ForceField it was made from); _bonds() ... _gbsa() rebuild each record on the buffers, on the module's
    # device, at every evaluation (a frozen dataclass of tensors: no graph break under torch.compile).
    def _buffers_of(self, record: Any, **names: str) -> None:
        """Register copies of ``record``'s tensor fields as buffers, ``names`` mapping buffer name → field name."""
        for buffer, field in names.items():
            self.register_buffer(buffer, getattr(record, field).clone())

    def _bonds(self) -> BondTerm:
        return BondTerm(index=self.bond_idx, r0=self.bond_r0, k=self.bond_k)

    def _angles(self) -> AngleTerm:
        return AngleTerm(index=self.angle_idx, theta0=self.angle_t0, k=self.angle_k)

    def _torsions(self) -> TorsionTerm:
        return TorsionTerm(
            index=self.torsion_idx, periodicity=self.torsion_n, phase=self.torsion_phase, k=self.torsion_k
        )

    def _nonbonded(self) -> NonbondedTerm:
        return NonbondedTerm(keep=self.nb_keep, qq=self.nb_qq, sigma=self.nb_sigma, four_eps=self.nb_4eps)

    def _gbsa(self) -> GBSAOBCTerm:
        return GBSAOBCTerm(
            charge=self.gb_charge,
            rho=self.gb_rho,
            scaled=self.gb_scaled,
            constants=cast(OBCConstants, self.gb),
        )

    def _difference_vectors(self) -> None:
        r"""The bonded terms' difference vectors :math:`x_\text{head} - x_\text{tail}`, all in one list.

        Rows: bonds :math:`x_i - x_j`; angles :math:`a = x_i - x_j`, then :math:`b = x_k - x_j`; torsions
        :math:`b_1 = x_j - x_i`, :math:`b_2 = x_k - x_j`, :math:`b_3 = x_l - x_k` (the vectors each term function
        of :mod:`~p4lightning.systems.terms` takes). ``vec_incidence`` ``(K, N)`` maps positions to them (+1 at
        the head, −1 at the tail), and its transpose maps a gradient in the vectors back to the atoms in one
        matrix product.
        """
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.vec_slices: dict[str, int] = {}  # first row of each term's vectors
        start = 0
        for term, name, pairs in (
            ("bond", "bond_idx", BOND_VECTORS),
            ("angle", "angle_idx", ANGLE_VECTORS),
            ("torsion", "torsion_idx", TORSION_VECTORS),
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

    # --- evaluation -----------------------------------------------------------------------------------------
    # Note [batch last]: every term works on positions laid out (3, N, B) — the batch innermost and contiguous —
    # and on 3-vectors held as three (K, B) components (terms.Vec), never as (K, 3, B) arrays. Gathering atoms
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
    def _bonded(self, xt: torch.Tensor, grad: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        r"""Bond, angle and torsion energies (kJ/mol) ``(B,)`` of positions ``xt`` ``(3, N, B)`` nm.

        With ``grad``, also :math:`\partial E/\partial x` ``(3, N, B)`` (kJ mol⁻¹ nm⁻¹): each term function
        returns its gradient in its difference vectors (:meth:`_difference_vectors`), and one product with
        ``vec_incidence`` returns them all to the atoms. Vectors are triples of ``(K, B)`` components
        (Note [batch last]).
        """
        out: dict[str, torch.Tensor] = {}
        if not self.vec_slices:
            return out, (torch.zeros_like(xt) if grad else None)
        vec = tuple(c[self.vec_head] - c[self.vec_tail] for c in xt)  # 3 x (K, B)
        parts: list[Vec] = []

        def rows(term: str, m: int, n: int) -> Vec:
            first = self.vec_slices[term] + m * n
            return vec[0][first : first + n], vec[1][first : first + n], vec[2][first : first + n]

        if "bond" in self.vec_slices:
            n = self.bond_idx.shape[0]
            out["bond"], g = bond_energy(self._bonds(), rows("bond", 0, n), grad)
            parts += g or []
        if "angle" in self.vec_slices:
            n = self.angle_idx.shape[0]
            out["angle"], g = angle_energy(self._angles(), rows("angle", 0, n), rows("angle", 1, n), grad)
            parts += g or []
        if "torsion" in self.vec_slices:
            n = self.torsion_idx.shape[0]
            b1, b2, b3 = (rows("torsion", m, n) for m in range(3))
            out["torsion"], g = torsion_energy(self._torsions(), b1, b2, b3, grad)
            parts += g or []
        if not grad:
            return out, None
        g_vec = torch.stack([torch.cat([part[c] for part in parts]) for c in range(3)])  # (3, K, B)
        return out, self.vec_incidence.to(xt.dtype).T @ g_vec  # (3, N, B)

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
        if "nonbonded" in self.terms:  # the implicit solvent comes with it (read_system)
            d = tuple(c[self.pair_i] - c[self.pair_j] for c in xt)  # 3 x (P, B)
            r = norm(d)  # (P, B): every distance once
            out["nonbonded"], dedr = nonbonded_energy(self._nonbonded(), r, grad)
            if "gb" in self.terms:
                out["gb"], dedr_gb = obc_energy(
                    self._gbsa(), r, self.pair_i, self.pair_j, self.pair_owner, grad
                )
                dedr = dedr + dedr_gb if dedr is not None and dedr_gb is not None else None
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

    def close(self) -> None:
        """Nothing to release: the op lives in this process (the energy contract's ``close``,
        :class:`~p4lightning.systems.protocol.ReducedEnergy`)."""

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
