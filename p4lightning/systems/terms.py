r"""The force-field terms as pure functions: energy and analytic gradient of one functional form each.

Each function takes one parameter record of :mod:`p4lightning.systems.forcefield` and the geometry its form
depends on — difference vectors for the bonded terms, pair distances for the nonbonded ones — and returns the
term's energy (kJ/mol) per conformation ``(B,)`` and, with ``grad=True``, its derivative in that geometry
(kJ/mol per nm), computed in the same pass (Note [analytic gradient] in
:mod:`~p4lightning.systems.torch_energy`). No module state: the caller gathers the geometry from positions and
returns the gradient to the atoms (:class:`~p4lightning.systems.torch_energy.TorchEnergy` does both with one
incidence matrix per kind).

Layout (Note [batch last] in :mod:`~p4lightning.systems.torch_energy`): a 3-vector is a :data:`Vec`, three
``(K, B)`` components; pair distances are ``(P, B)``; per-atom values ``(N, B)``. The batch is the last axis
everywhere. The functions compute in the geometry's dtype; the records' float64 parameters are cast to it.

Which vectors a bonded term takes is fixed by :data:`BOND_VECTORS`, :data:`ANGLE_VECTORS` and
:data:`TORSION_VECTORS`: pairs ``(head, tail)`` of columns of the record's ``index``, each vector
:math:`x_\text{head} - x_\text{tail}`.

Example:
    >>> from p4lightning.systems.forcefield import BondTerm
    >>> bonds = BondTerm(index=torch.tensor([[0, 1]]), r0=torch.tensor([0.1]), k=torch.tensor([2.0]))
    >>> d = (torch.tensor([[0.3]]), torch.zeros(1, 1), torch.zeros(1, 1))   # one bond, B = 1, 0.3 nm
    >>> e, (g,) = bond_energy(bonds, d, grad=True)                          # 0.5 * 2 * 0.2^2; 2 * 0.2 * d/r
    >>> round(float(e), 6), round(float(g[0]), 6)
    (0.04, 0.4)
"""

from __future__ import annotations

import torch

from p4lightning.systems.forcefield import AngleTerm, BondTerm, GBSAOBCTerm, NonbondedTerm, TorsionTerm

__all__ = [
    "ANGLE_VECTORS",
    "BOND_VECTORS",
    "TORSION_VECTORS",
    "Vec",
    "angle_energy",
    "bond_energy",
    "cross",
    "dot",
    "nonbonded_energy",
    "norm",
    "obc_energy",
    "scale",
    "torsion_energy",
]

Vec = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a 3-vector as its components, each (K, B)

#: the bond vector :math:`d = x_i - x_j`
BOND_VECTORS = ((0, 1),)
#: the angle's arms from the vertex :math:`j`: :math:`a = x_i - x_j`, :math:`b = x_k - x_j`
ANGLE_VECTORS = ((0, 1), (2, 1))
#: the torsion's bonds :math:`b_1 = x_j - x_i`, :math:`b_2 = x_k - x_j`, :math:`b_3 = x_l - x_k`
TORSION_VECTORS = ((1, 0), (2, 1), (3, 2))


def dot(a: Vec, b: Vec) -> torch.Tensor:
    """:math:`a \\cdot b` ``(K, B)``."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def norm(a: Vec) -> torch.Tensor:
    """:math:`|a|` ``(K, B)``."""
    return dot(a, a).sqrt()


def cross(a: Vec, b: Vec) -> Vec:
    """:math:`a \\times b`."""
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def scale(s: torch.Tensor, a: Vec) -> Vec:
    """:math:`s\\,a` for ``s`` ``(K, B)``."""
    return s * a[0], s * a[1], s * a[2]


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Parameters ``(K,)`` as ``(K, 1)`` in ``like``'s dtype (broadcasts over the batch)."""
    return values.to(dtype=like.dtype)[..., None]


def bond_energy(term: BondTerm, d: Vec, grad: bool) -> tuple[torch.Tensor, list[Vec] | None]:
    r"""Harmonic bonds :math:`E = \sum \tfrac12 k (r - r_0)^2`, :math:`r = |d|`.

    Args:
        term: the bonds' parameters (``K`` bonds).
        d: bond vectors :math:`x_i - x_j` (:data:`BOND_VECTORS`), components ``(K, B)`` nm.
        grad: also return the gradient.

    Returns:
        :math:`E` ``(B,)`` kJ/mol and, with ``grad``, ``[dE/dd]``: :math:`k (r - r_0)\, d / r` (kJ mol⁻¹ nm⁻¹).
    """
    r = norm(d)  # (K, B)
    k, stretch = _column(term.k, r), r - _column(term.r0, r)
    energy = (0.5 * k * stretch.square()).sum(0)
    return energy, ([scale(k * stretch / r, d)] if grad else None)


def angle_energy(term: AngleTerm, a: Vec, b: Vec, grad: bool) -> tuple[torch.Tensor, list[Vec] | None]:
    r"""Harmonic angles :math:`E = \sum \tfrac12 k (\theta - \theta_0)^2`, :math:`\theta = \operatorname{atan2}(|p|,
    a \cdot b)`, :math:`p = a \times b`.

    Args:
        term: the angles' parameters (``K`` angles).
        a: the arm :math:`x_i - x_j` (:data:`ANGLE_VECTORS`), components ``(K, B)`` nm.
        b: the arm :math:`x_k - x_j`, components ``(K, B)`` nm.
        grad: also return the gradient.

    Returns:
        :math:`E` ``(B,)`` kJ/mol and, with ``grad``, ``[dE/da, dE/db]`` (kJ mol⁻¹ nm⁻¹) from
        :math:`\partial\theta/\partial a = a \times p / (|a|^2 |p|)`,
        :math:`\partial\theta/\partial b = p \times b / (|b|^2 |p|)` — zero for exactly collinear atoms, where
        :math:`\theta = \pi` is a cusp.
    """
    p = cross(a, b)
    p_norm = norm(p)
    theta = torch.atan2(p_norm, dot(a, b))
    k, bend = _column(term.k, theta), theta - _column(term.theta0, theta)
    energy = (0.5 * k * bend.square()).sum(0)
    if not grad:
        return energy, None
    s = k * bend / p_norm
    s = torch.where(p_norm == 0, torch.zeros_like(s), s)  # theta = pi: a cusp, no force
    return energy, [scale(s / dot(a, a), cross(a, p)), scale(s / dot(b, b), cross(p, b))]


def torsion_energy(
    term: TorsionTerm, b1: Vec, b2: Vec, b3: Vec, grad: bool
) -> tuple[torch.Tensor, list[Vec] | None]:
    r"""Periodic torsions :math:`E = \sum k (1 + \cos(n\varphi - \varphi_0))`,
    :math:`\varphi = \operatorname{atan2}((n_1 \times n_2) \cdot b_2 / |b_2|,\ n_1 \cdot n_2)`,
    :math:`n_1 = b_1 \times b_2`, :math:`n_2 = b_2 \times b_3`.

    Args:
        term: the torsions' parameters (``K`` torsions).
        b1: the bond :math:`x_j - x_i` (:data:`TORSION_VECTORS`), components ``(K, B)`` nm.
        b2: the bond :math:`x_k - x_j`, components ``(K, B)`` nm.
        b3: the bond :math:`x_l - x_k`, components ``(K, B)`` nm.
        grad: also return the gradient.

    Returns:
        :math:`E` ``(B,)`` kJ/mol and, with ``grad``, ``[dE/db1, dE/db2, dE/db3]`` (kJ mol⁻¹ nm⁻¹) from (Blondel &
        Karplus, J. Comput. Chem. 17, 1132, 1996) :math:`\partial\varphi/\partial b_1 = |b_2| n_1 / n_1^2`,
        :math:`\partial\varphi/\partial b_3 = |b_2| n_2 / n_2^2`, :math:`\partial\varphi/\partial b_2 =
        -\frac{b_1 \cdot b_2}{|b_2|^2} \partial\varphi/\partial b_1 - \frac{b_3 \cdot b_2}{|b_2|^2}
        \partial\varphi/\partial b_3`.
    """
    n1, n2 = cross(b1, b2), cross(b2, b3)
    b2_sq = dot(b2, b2)
    b2_norm = b2_sq.sqrt()
    phi = torch.atan2(dot(cross(n1, n2), b2) / b2_norm, dot(n1, n2))
    n_t, k_t = _column(term.periodicity, phi), _column(term.k, phi)
    arg = n_t * phi - _column(term.phase, phi)
    energy = (k_t * (1.0 + torch.cos(arg))).sum(0)
    if not grad:
        return energy, None
    dphi = -k_t * n_t * torch.sin(arg) * b2_norm  # dE/dphi |b2|, (K, B)
    g1, g3 = scale(dphi / dot(n1, n1), n1), scale(dphi / dot(n2, n2), n2)
    c1, c3 = dot(b1, b2) / b2_sq, dot(b3, b2) / b2_sq
    g2 = (-c1 * g1[0] - c3 * g3[0], -c1 * g1[1] - c3 * g3[1], -c1 * g1[2] - c3 * g3[2])
    return energy, [g1, g2, g3]


def nonbonded_energy(
    term: NonbondedTerm, r: torch.Tensor, grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Coulomb + Lennard-Jones :math:`E = \sum_{i<j} \frac{f q_{ij}}{r} + 4\varepsilon (s^{12} - s^6)`,
    :math:`s = \sigma_{ij}/r`, over the pairs the record keeps.

    Args:
        term: the pair parameters (``P`` pairs, the order of :func:`~p4lightning.systems.forcefield.pair_indices`).
        r: pair distances ``(P, B)`` nm.
        grad: also return the gradient.

    Returns:
        :math:`E` ``(B,)`` kJ/mol and, with ``grad``, :math:`\partial E/\partial r_{ij} = -f q_{ij}/r^2
        - 4\varepsilon (12 s^{12} - 6 s^6)/r` ``(P, B)`` kJ mol⁻¹ nm⁻¹ (zero for the pairs not kept).
    """
    r = torch.where(term.keep[:, None], r, torch.ones_like(r))  # excluded pairs: finite, weight 0
    s6 = (_column(term.sigma, r) / r).pow(6)
    coulomb, four_eps = _column(term.qq, r) / r, _column(term.four_eps, r)
    dedr = -((coulomb + four_eps * (12 * s6.square() - 6 * s6)) / r) if grad else None
    return (coulomb + four_eps * (s6.square() - s6)).sum(0), dedr


def obc_energy(
    term: GBSAOBCTerm,
    r: torch.Tensor,
    pair_i: torch.Tensor,
    pair_j: torch.Tensor,
    pair_owner: torch.Tensor,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""OBC generalized-Born solvation + surface area (Onufriev, Bashford & Case, Proteins 55, 383, 2004).

    With offset radii :math:`\rho_i`, scaled radii :math:`s_j`, :math:`\tilde\rho_i = \rho_i + \delta`:

    .. math::
        I_i = \sum_{j \ne i} \mathbb 1[r + s_j \ge \rho_i]\, \tfrac12 \Bigl(\tfrac1L - \tfrac1U
            + \tfrac14 \bigl(r - \tfrac{s_j^2}{r}\bigr)\bigl(\tfrac1{U^2} - \tfrac1{L^2}\bigr)
            + \tfrac{1}{2r}\ln\tfrac LU\Bigr),\quad U = r + s_j,\ L = \max(\rho_i, |r - s_j|),

    .. math::
        B_i = \Bigl(\tfrac1{\rho_i} - \tfrac{\tanh(\alpha\psi_i - \beta\psi_i^2 + \gamma\psi_i^3)}{\tilde\rho_i}\Bigr)^{-1},
        \quad \psi_i = I_i \rho_i,

    .. math::
        E = -\tfrac12 f' \Bigl(\tfrac1{\epsilon_\text{in}} - \tfrac1{\epsilon_\text{out}}\Bigr)
            \Bigl(\sum_i \frac{q_i^2}{B_i} + 2\sum_{i<j} \frac{q_i q_j}{f_{ij}}\Bigr)
            + \sum_i c_\text{SA} (\tilde\rho_i + r_\text{probe})^2 (\tilde\rho_i / B_i)^6,
        \quad f_{ij} = \sqrt{r_{ij}^2 + B_i B_j e^{-r_{ij}^2 / (4 B_i B_j)}}.

    The Born integral :math:`I_i` sums over ordered pairs: each pair i < j once as (owner i, sphere j) and
    once as (owner j, sphere i), summed to the owners by ``pair_owner``. The gradient :math:`\partial E/\partial
    r_{ij}` is the explicit pair term :math:`\partial e_{ij}/\partial f \cdot r (1 - e^{-r^2/4B_iB_j}/4)/f`
    plus, through the Born radii, :math:`g_{ij} + g_{ji}` with :math:`g_{ij} = (\partial E/\partial B_i)
    (\mathrm dB_i/\mathrm dI_i)\, \partial(\text{term}_{ij})/\partial r`, :math:`\mathrm dB/\mathrm dI = B^2
    (1 - t^2)(\alpha - 2\beta\psi + 3\gamma\psi^2)\rho/\tilde\rho`, and :math:`\partial E/\partial B_i` from the
    self, surface and pair energies (:math:`\partial f/\partial(B_iB_j) = e^{-r^2/4B_iB_j} (1 + r^2/4B_iB_j)/2f`).

    Args:
        term: the per-atom parameters (``N`` atoms) and the model's constants.
        r: distances of every pair :math:`i < j` ``(P, B)`` nm.
        pair_i: the pairs' first atoms :math:`i` ``(P,)`` int64.
        pair_j: the pairs' second atoms :math:`j` ``(P,)`` int64.
        pair_owner: ``(N, 2P)``, column :math:`p` one at atom :math:`i` of pair :math:`p`, column :math:`P + p`
            one at its atom :math:`j` (sums over ordered pairs to their owner).
        grad: also return the gradient.

    Returns:
        :math:`E` ``(B,)`` kJ/mol and, with ``grad``, :math:`\partial E/\partial r_{ij}` ``(P, B)``
        kJ mol⁻¹ nm⁻¹.
    """
    c = term.constants
    pi, pj = pair_i, pair_j
    n_pairs = r.shape[0]
    owner = pair_owner.to(r.dtype)  # (N, 2P)
    rho, s = _column(term.rho, r), _column(term.scaled, r)  # (N, 1)
    rho_i, s_j = torch.cat([rho[pi], rho[pj]]), torch.cat([s[pj], s[pi]])  # (2P, 1): owner, sphere
    r2p = torch.cat([r, r])  # (2P, B)
    upper = r2p + s_j
    diff = r2p - s_j
    lower = torch.maximum(rho_i, diff.abs())
    inv_l, inv_u, inv_r = 1 / lower, 1 / upper, 1 / r2p
    log_lu = torch.log(lower / upper)
    shell = r2p - s_j.square() * inv_r
    term_ij = 0.5 * (inv_l - inv_u + 0.25 * shell * (inv_u.square() - inv_l.square()) + 0.5 * log_lu * inv_r)
    active = upper - rho_i >= 0
    integral = owner @ torch.where(active, term_ij, torch.zeros_like(term_ij))  # (N, B)
    psi = integral * rho
    radius = rho + c.offset
    t = torch.tanh(c.alpha * psi - c.beta * psi.square() + c.gamma * psi.pow(3))
    born = 1 / (1 / rho - t / radius)  # (N, B)
    q = _column(term.charge, r)
    pre = c.coul * (1 / c.eps_in - 1 / c.eps_out)
    e_self = -0.5 * pre * q.square() / born  # (N, B)
    e_sa = c.sa * (radius + c.probe).square() * (radius / born).pow(6)
    r2 = r.square()
    born_i, born_j = born[pi], born[pj]  # (P, B)
    bb = born_i * born_j
    damp = torch.exp(-r2 / (4 * bb))
    f = torch.sqrt(r2 + bb * damp)
    qq = q[pi] * q[pj]  # (P, 1)
    energy = (e_self + e_sa).sum(0) + (-pre * qq / f).sum(0)
    if not grad:
        return energy, None
    de_df = pre * qq / f.square()  # (P, B)
    c_bb = de_df * damp * (1 + r2 / (4 * bb)) / (2 * f)  # dE/d(B_i B_j)
    de_db = (-e_self - 6 * e_sa) / born + owner @ torch.cat([c_bb * born_j, c_bb * born_i])  # (N, B)
    db_di = (
        born.square()
        * (1 - t.square())
        * (c.alpha - 2 * c.beta * psi + 3 * c.gamma * psi.square())
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
    return energy, de_df * r * (1 - 0.25 * damp) / f + g[:n_pairs] + g[n_pairs:]
