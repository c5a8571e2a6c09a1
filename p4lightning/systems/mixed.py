r"""The mixed coordinate transform of Boltzmann generators (Noé et al. 2019): 66 Cartesian → 60 flow coordinates.

A few atoms (for alanine dipeptide: ALA N, CA, HA, CB, C) stay Cartesian; all others are placed by a
Z-matrix in internal coordinates. With :math:`m` Cartesian atoms and :math:`M` Z-matrix atoms:

* **Cartesian block** (:math:`3m` → :math:`3m - 6`): the block is superposed (Kabsch, minimum RMSD) onto a
  reference fitted on training data. The minimum-RMSD superposition satisfies the Eckart conditions
  :math:`\sum_a d_a = 0` and :math:`\sum_a r^{\mathrm{ref}}_a \times d_a = 0` for the displacements
  :math:`d = x - r^{\mathrm{ref}}`: six linear constraints. Superposed data therefore lie *exactly* in a
  :math:`3m - 6` dimensional subspace, found by PCA (the six vanishing components are dropped), and are
  whitened: :math:`z_c = \Lambda^{-1/2} V^\top (x_c - \mu)`.
* **Internal block** (:math:`3M`): bond :math:`r`, angle :math:`\theta`, torsion :math:`\varphi` of every
  Z-matrix atom, standardised: :math:`(r - \mu_r)/\sigma_r`, :math:`(\theta - \mu_\theta)/\sigma_\theta`, and
  :math:`\operatorname{wrap}(\varphi - \bar\varphi)/\sigma_\varphi` with the circular mean :math:`\bar\varphi`,
  so torsions are compared on the circle (no wrap-around jump at ±π in the data's range).
* **Torsions on the circle** (``circular``: all torsions, or those of chosen Z-matrix atoms): a circular torsion's
  coordinate is the angle :math:`\operatorname{wrap}(\varphi - \bar\varphi) \in [-\pi, \pi)` itself (no scale: a
  scale would cut the circle); the circular coordinates come last in the flow coordinates
  (:attr:`MixedCoordinateTransform.circular_indices`), after the standardised torsions. A flow whose circular
  coordinates stay in :math:`[-\pi, \pi)` (circular splines) then gives the density of the conformation. A
  standardised torsion is a real number: a flow may put a sample at :math:`\varphi + 2\pi k`, the inverse places
  the same atoms, and :math:`\ln q` is then the density of one of several preimages
  (:meth:`MixedCoordinateTransform.out_of_branch` counts such samples). That is harmless for a narrow torsion,
  whose branch edge :math:`\pm\pi/\sigma_\varphi` lies many standard deviations out, and is what FAB does for
  them; a broad one (a rotor, φ, ψ) belongs on the circle.

Log-determinant of the inverse (flow coordinates → positions), with respect to the coordinates
:math:`(V^\top(x_c - \mu), x_\text{Z-matrix atoms})` of the :math:`3\cdot 22 - 6 = 60`-dimensional space of
conformations modulo rigid motions:

.. math::
    \ln|\det J_{z\to x}| = \tfrac12\sum\ln\lambda + \sum(\ln\sigma_r + \ln\sigma_\theta + \ln\sigma_\varphi)
        + \sum_{\text{Z-matrix atoms}} (2\ln r + \ln\sin\theta),

and the forward ladj is its negative (the :math:`\ln\sigma_\varphi` of circular torsions are 0). The forward map returns positions in the reference frame
(:meth:`MixedCoordinateTransform.align` gives the superposed input), so ``inverse(forward(x)) == align(x)``.

Units: positions in nm, angles in rad.

References:
    F. Noé, S. Olsson, J. Köhler, H. Wu. Boltzmann generators. Science 365, eaaw1147 (2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from p4lightning._validation import check_features, check_finite
from p4lightning.bijection import Bijection
from p4lightning.systems.internal import angle, bond, place, torsion, wrap_angle

__all__ = ["MixedCoordinateTransform", "kabsch_align", "validate_z_matrix"]

#: Smallest fitted standard deviation (nm or rad) :meth:`MixedCoordinateTransform.fit_` accepts: a coordinate
#: constant over the training data cannot be standardised, so fitting refuses it instead of clamping.
MIN_STD = 1e-6


def validate_z_matrix(
    z_matrix: Sequence[Sequence[int]],
    cartesian: Sequence[int],
    n_atoms: int,
    bonds: set[frozenset[int]] | None = None,
) -> None:
    """Check that every atom is either Cartesian or placed once, from atoms placed before it, along bonds.

    With ``bonds``, row ``(i, j, k, l)`` needs bonds i–j and j–k, and its torsion partner ``l`` bonded to ``k``
    (a proper torsion) or to ``j`` (a sibling of ``i``: the torsion is then the offset between two bonds on
    ``j``, as in the standard Z-matrix of :data:`~p4lightning.systems.alanine.Z_MATRIX_STANDARD`).

    Raises:
        ValueError: naming the offending Z-matrix row.
    """
    placed = set(cartesian)
    if len(placed) != len(cartesian) or len(cartesian) < 3:
        raise ValueError(f"cartesian must list at least 3 distinct atoms; got {list(cartesian)}")
    for row in z_matrix:
        if len(row) != 4 or len(set(row)) != 4:
            raise ValueError(
                f"Z-matrix row {tuple(row)} must name 4 distinct atoms (i, bonded j, angle k, torsion l)"
            )
        i, j, k, t = row  # atom, bond partner, angle partner, torsion partner
        if i in placed:
            raise ValueError(f"Z-matrix row {tuple(row)}: atom {i} is placed twice")
        if not {j, k, t} <= placed:
            raise ValueError(
                f"Z-matrix row {tuple(row)}: references {sorted({j, k, t} - placed)} are not placed yet"
            )
        if bonds is not None:
            for a, b in ((i, j), (j, k)):
                if frozenset((a, b)) not in bonds:
                    raise ValueError(
                        f"Z-matrix row {tuple(row)}: atoms {a} and {b} are not bonded in the topology"
                    )
            if frozenset((k, t)) not in bonds and frozenset((j, t)) not in bonds:
                raise ValueError(
                    f"Z-matrix row {tuple(row)}: torsion atom {t} is bonded neither to {k} (a proper torsion) nor "
                    f"to {j} (a sibling of {i}) in the topology"
                )
        placed.add(i)
    if placed != set(range(n_atoms)):
        raise ValueError(
            f"Z-matrix and cartesian atoms must cover all {n_atoms} atoms; missing {sorted(set(range(n_atoms)) - placed)}"
        )


def kabsch_align(x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Minimum-RMSD superposition of ``x`` ``(B, m, 3)`` onto ``reference`` ``(m, 3)`` (centred).

    Returns:
        ``(aligned, rotation, centroid)`` with ``aligned = (x - centroid) @ rotation`` ``(B, m, 3)``,
        ``rotation`` ``(B, 3, 3)`` proper (det = +1) and ``centroid`` ``(B, 1, 3)``.
    """
    centroid = x.mean(dim=-2, keepdim=True)
    xc = x - centroid
    h = xc.transpose(-1, -2) @ reference  # (B, 3, 3)
    u, _, vh = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(u @ vh))
    flip = torch.ones_like(h[..., 0])
    flip[..., -1] = d
    rotation = (u * flip.unsqueeze(-2)) @ vh
    return xc @ rotation, rotation, centroid


class MixedCoordinateTransform(Bijection):
    r"""Positions ``(*, 3N)`` in nm ↔ flow coordinates ``(*, 3N - 6)``: whitened Cartesian block + standardised
    internal coordinates. Build it with :meth:`fit` on training data.

    Args:
        n_atoms: :math:`N`.
        cartesian: indices of the Cartesian atoms (:math:`m \ge 3`).
        z_matrix: rows ``(i, j, k, l)`` in placement order: atom ``i`` bonded to ``j``, angle ``i-j-k``,
            torsion ``i-j-k-l``.
        reference, pca_mean, pca_vectors, pca_values, ic_mean, ic_std: fitted statistics (see :meth:`fit`).
        circular: which torsions are angles in :math:`[-\pi, \pi)` (their ``ic_std`` entry is 1): ``True`` (all),
            ``False`` (none) or the Z-matrix atoms (``z_matrix[r][0]``) whose torsions are; saved in the
            ``state_dict`` as a ``(M,)`` mask (a ``state_dict`` without it is of a transform with none).

    ``dim`` is the flow side, :math:`3N - 6`; :attr:`n_atoms` the Cartesian side.
    """

    def __init__(
        self,
        n_atoms: int,
        cartesian: Sequence[int],
        z_matrix: Sequence[Sequence[int]],
        reference: torch.Tensor,
        pca_mean: torch.Tensor,
        pca_vectors: torch.Tensor,
        pca_values: torch.Tensor,
        ic_mean: torch.Tensor,
        ic_std: torch.Tensor,
        circular: bool | Sequence[int] = False,
    ) -> None:
        super().__init__()
        validate_z_matrix(z_matrix, cartesian, n_atoms)
        self.n_atoms = n_atoms
        m, n_z = len(cartesian), len(z_matrix)
        self.dim = 3 * n_atoms - 6
        self.n_cartesian_dims = 3 * m - 6
        shapes = {
            "reference": (m, 3),
            "pca_mean": (3 * m,),
            "pca_vectors": (3 * m, 3 * m - 6),
            "pca_values": (3 * m - 6,),
            "ic_mean": (3, n_z),
            "ic_std": (3, n_z),
        }
        values = locals()
        for name, shape in shapes.items():
            t = values[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}; got {tuple(t.shape)}")
            self.register_buffer(
                name, t.detach().clone()
            )  # dtype of the fitted statistics; .float() converts
        self.register_buffer("fitted", torch.ones((), dtype=torch.bool))
        mask = self._circular_mask(circular, [row[0] for row in z_matrix])
        if not torch.all(ic_std[2][mask] == 1):
            raise ValueError("circular torsions need their ic_std entries to be 1 (angles are not scaled)")
        self.register_buffer("circular_torsions", mask)
        self._build_order()
        self.register_buffer("cartesian", torch.as_tensor(list(cartesian), dtype=torch.long))
        self.register_buffer(
            "z_matrix", torch.as_tensor([list(r) for r in z_matrix], dtype=torch.long).reshape(n_z, 4)
        )
        self._is_fitted = True  # host copy of ``fitted``: checked on every call without a device read
        self._build_levels()

    @staticmethod
    def _circular_mask(circular: bool | Sequence[int], atoms: list[int]) -> torch.Tensor:
        if isinstance(circular, bool):
            return torch.full((len(atoms),), circular, dtype=torch.bool)
        chosen = [int(a) for a in circular]
        unknown = sorted(set(chosen) - set(atoms))
        if unknown:
            raise ValueError(f"circular names atoms {unknown} that the Z-matrix does not place")
        return torch.tensor([a in chosen for a in atoms], dtype=torch.bool)

    def _build_order(self) -> None:
        """The flow-coordinate order (non-persistent buffers, from ``circular_torsions``): Cartesian block, bonds,
        angles, standardised torsions, circular torsions. ``_coord_order`` maps the natural order (torsions in
        Z-matrix order) to it, ``_coord_unorder`` back; :attr:`circular` is the host copy of the mask, :attr:`n_circular` its count."""
        mask = self.circular_torsions.cpu()
        self.circular = tuple(bool(b) for b in mask)
        self.n_circular = int(mask.sum())
        start = self.dim - len(mask)
        torsions = [start + i for i in range(len(mask)) if not mask[i]] + [start + i for i in range(len(mask)) if mask[i]]
        order = torch.tensor(list(range(start)) + torsions, dtype=torch.long, device=self.circular_torsions.device)
        self.register_buffer("_coord_order", order, persistent=False)
        self.register_buffer("_coord_unorder", torch.argsort(order), persistent=False)
        self._permuted = bool(self.n_circular) and not all(mask)

    def _build_levels(self) -> None:
        r"""Precompute the placement schedule of :meth:`inverse` (once, not per batch).

        Atoms are held in *placement order*: the :math:`m` Cartesian atoms, then the Z-matrix atoms level by
        level, where level :math:`\ell` holds every atom whose three reference atoms are placed in levels
        :math:`< \ell` (alanine dipeptide: 17 atoms in 3 levels). Each level is one batched NeRF call. Buffers
        (non-persistent, so they follow ``.to(device)`` but stay out of the ``state_dict``):
        ``_ic_order`` ``(M,)`` Z-matrix rows by level; ``_level_refs`` ``(3, M)`` placement-order indices of the
        (bond, angle, torsion) partners of those rows; ``_unorder`` ``(N,)`` placement order → atom index.
        """
        cartesian, rows = self.cartesian.tolist(), self.z_matrix.tolist()
        position = {a: p for p, a in enumerate(cartesian)}  # atom -> index in placement order
        level_of = dict.fromkeys(cartesian, 0)
        for i, j, k, t in rows:  # validated: references are placed before i
            level_of[i] = 1 + max(level_of[j], level_of[k], level_of[t])
        order = sorted(range(len(rows)), key=lambda r: level_of[rows[r][0]])  # stable: Z-matrix order in a level
        refs = []
        for r in order:
            i, j, k, t = rows[r]
            refs.append([position[j], position[k], position[t]])
            position[i] = len(position)
        levels = [level_of[rows[r][0]] for r in order]  # ascending
        self._level_sizes = tuple(levels.count(level) for level in sorted(set(levels)))
        device = self.z_matrix.device
        self.register_buffer("_ic_order", torch.tensor(order, dtype=torch.long, device=device), persistent=False)
        self.register_buffer(
            "_level_refs", torch.tensor(refs, dtype=torch.long, device=device).reshape(-1, 3).T.contiguous(),
            persistent=False,
        )  # fmt: skip
        self.register_buffer(
            "_unorder", torch.tensor([position[a] for a in range(self.n_atoms)], dtype=torch.long, device=device),
            persistent=False,
        )  # fmt: skip

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        key = prefix + "circular_torsions"
        n_z = self.circular_torsions.numel()
        if key not in state_dict:  # saved before the option existed: torsions were standardised reals
            state_dict[key] = torch.zeros(n_z, dtype=torch.bool)
        elif state_dict[key].dim() == 0:  # saved as one flag (all or none)
            state_dict[key] = state_dict[key].expand(n_z).clone()
        if not torch.equal(state_dict[key].cpu(), self.circular_torsions.cpu()):
            raise ValueError(
                f"the state_dict is of a transform with circular torsions {state_dict[key].tolist()}, this one has "
                f"{self.circular_torsions.tolist()}: build the module with the same option"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]
        self._is_fitted = bool(self.fitted)
        self._build_levels()  # a loaded Z-matrix may differ from the constructor's

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def empty(
        cls,
        n_atoms: int,
        cartesian: Sequence[int],
        z_matrix: Sequence[Sequence[int]],
        dtype: torch.dtype = torch.float64,
        circular: bool | Sequence[int] = False,
    ) -> MixedCoordinateTransform:
        """A transform with placeholder statistics of the right shapes (``fitted`` is False): build the module
        first, then :meth:`fit_` it on data or load a ``state_dict`` into it."""
        m, n_z, k = len(cartesian), len(z_matrix), 3 * len(cartesian) - 6
        kw = {"dtype": dtype}
        transform = cls(
            n_atoms,
            cartesian,
            z_matrix,
            torch.zeros(m, 3, **kw),
            torch.zeros(3 * m, **kw),
            torch.eye(3 * m, k, **kw),
            torch.ones(k, **kw),
            torch.zeros(3, n_z, **kw),
            torch.ones(3, n_z, **kw),
            circular,
        )
        transform.fitted.fill_(False)
        transform._is_fitted = False
        return transform

    @classmethod
    def fit(
        cls,
        positions: torch.Tensor,
        cartesian: Sequence[int],
        z_matrix: Sequence[Sequence[int]],
        iterations: int = 3,
        circular: bool | Sequence[int] = False,
    ) -> MixedCoordinateTransform:
        """A transform fitted on training ``positions`` ``(F, N, 3)`` nm (see :meth:`fit_`)."""
        if positions.dim() != 3 or positions.shape[-1] != 3:
            raise ValueError(f"positions must have shape (F, N, 3) in nm; got {tuple(positions.shape)}")
        empty = cls.empty(positions.shape[1], cartesian, z_matrix, positions.dtype, circular)
        return empty.fit_(positions, iterations)

    @torch.no_grad()
    def fit_(self, positions: torch.Tensor, iterations: int = 3) -> MixedCoordinateTransform:
        """Fit reference, PCA and internal-coordinate statistics in place on ``positions`` ``(F, N, 3)`` nm."""
        cartesian = self.cartesian.tolist()
        if positions.dim() == 2 and positions.shape[1] == 3 * self.n_atoms:
            positions = positions.reshape(len(positions), self.n_atoms, 3)
        if (
            positions.dim() != 3
            or positions.shape[1:] != (self.n_atoms, 3)
            or positions.shape[0] < 3 * len(cartesian)
        ):
            raise ValueError(
                f"positions must have shape (F, {self.n_atoms}, 3) with F >= {3 * len(cartesian)} frames; "
                f"got {tuple(positions.shape)}"
            )
        check_finite(positions, "positions")
        x = positions.to(torch.float64)
        cart = x[:, cartesian]
        reference = cart[0] - cart[0].mean(0)
        for _ in range(iterations):  # Procrustes: align to the mean, re-centre the mean
            aligned = kabsch_align(cart, reference)[0]
            reference = aligned.mean(0) - aligned.mean(0).mean(0)
        aligned = kabsch_align(cart, reference)[0].reshape(len(x), -1)
        mean = aligned.mean(0)
        values, vectors = torch.linalg.eigh(torch.cov((aligned - mean).T))  # ascending
        keep = self.n_cartesian_dims
        r, th, ph = self._internal(x, self.z_matrix.cpu())
        ph_mean = torch.atan2(torch.sin(ph).mean(0), torch.cos(ph).mean(0))
        pca_values = values[-keep:].flip(-1)
        ic_std = torch.stack([r.std(0), th.std(0), wrap_angle(ph - ph_mean).std(0)])
        if pca_values[-1] < MIN_STD**2:
            raise ValueError(
                f"positions: the Cartesian block (atoms {cartesian}) varies in only "
                f"{int((pca_values >= MIN_STD**2).sum())} of its {keep} internal directions over {len(x)} frames "
                f"(std < {MIN_STD} nm): identical or rigidly moved frames cannot be whitened"
            )
        flat = (ic_std < MIN_STD).nonzero().tolist()
        if flat:
            kind, row = flat[0]
            atom = int(self.z_matrix[row, 0])
            raise ValueError(
                f"positions: the {('bond', 'angle', 'torsion')[kind]} of Z-matrix atom {atom} (row {row}) is "
                f"constant over the {len(x)} frames (std < {MIN_STD}); {len(flat)} internal coordinate(s) in all "
                "cannot be standardised (identical frames?)"
            )
        ic_std[2][self.circular_torsions.cpu()] = 1.0  # angles on the circle are not scaled
        stats = {
            "reference": reference,
            "pca_mean": mean,
            "pca_vectors": vectors[:, -keep:].flip(-1),
            "pca_values": pca_values,
            "ic_mean": torch.stack([r.mean(0), th.mean(0), ph_mean]),
            "ic_std": ic_std,
        }
        for name, value in stats.items():
            getattr(self, name).copy_(value)
        self.fitted.fill_(True)
        self._is_fitted = True
        return self

    @staticmethod
    def _internal(x: torch.Tensor, zm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xi, xj, xk, xl = (x[:, zm[:, c]] for c in range(4))
        return bond(xi, xj), angle(xi, xj, xk), torsion(xi, xj, xk, xl)

    def _check_ready(self, x: torch.Tensor, name: str) -> None:
        if not self._is_fitted:
            raise RuntimeError(
                "MixedCoordinateTransform is not fitted: call fit_(training positions) or load a fitted state_dict "
                "before transforming (its statistics are placeholders)"
            )
        if x.dtype != self.reference.dtype:
            raise TypeError(
                f"{name} are {x.dtype} but the transform's statistics are {self.reference.dtype}; convert one of "
                f"them (e.g. {name}.to({self.reference.dtype}) or transform.to({x.dtype}))"
            )

    def _as_positions(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, 3 * self.n_atoms, "positions")
        self._check_ready(x, "positions")
        check_finite(x, "positions")
        return x.reshape(-1, self.n_atoms, 3)

    def _check_output(self, xyz: torch.Tensor, z: torch.Tensor, ladj: torch.Tensor) -> None:
        """Raise naming the degenerate geometry (coincident atoms, a zero bond, a straight angle) when the forward
        map is not finite; inside ``torch.compile`` an in-graph assertion with a shorter message."""
        rows_finite = torch.isfinite(ladj + z.sum(-1))
        if torch.compiler.is_compiling():
            torch._assert_async(
                rows_finite.all(), "flow coordinates are not finite: coincident atoms, a zero bond or a straight angle"
            )
            return
        if bool(rows_finite.all()):
            return
        bad = int((~rows_finite).nonzero()[0, 0])
        frame = xyz[bad]
        for row, (i, j, k, t) in enumerate(self.z_matrix.tolist()):
            for a, b in ((i, j), (j, k), (k, t), (i, k)):
                if float(torch.linalg.vector_norm(frame[a] - frame[b])) == 0.0:
                    raise ValueError(
                        f"positions: atoms {a} and {b} coincide in frame {bad} (Z-matrix row {row} of atom {i}): "
                        "its internal coordinates and log-determinant are undefined"
                    )
            if float(torch.sin(angle(frame[i], frame[j], frame[k]))) == 0.0:
                raise ValueError(
                    f"positions: the angle {i}-{j}-{k} is 0 or π in frame {bad} (Z-matrix row {row}): the torsion of "
                    f"atom {i} is undefined and log sin θ = -inf"
                )
        cart = self.cartesian.tolist()
        for p, a in enumerate(cart):
            for b in cart[p + 1 :]:
                if float(torch.linalg.vector_norm(frame[a] - frame[b])) == 0.0:
                    raise ValueError(f"positions: Cartesian atoms {a} and {b} coincide in frame {bad}")
        raise ValueError(f"positions: the flow coordinates of frame {bad} are not finite (degenerate geometry)")

    def align(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(*, 3N)`` moved rigidly so its Cartesian block is superposed on the reference, ``(*, 3N)``."""
        xyz = self._as_positions(x)
        _, rotation, centroid = kabsch_align(xyz[:, self.cartesian], self.reference)
        return ((xyz - centroid) @ rotation).reshape(x.shape)

    def _constant_ladj(self) -> torch.Tensor:
        return 0.5 * torch.log(self.pca_values).sum() + torch.log(self.ic_std).sum()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Positions ``(*, 3N)`` nm → ``(z, ladj)``, ``z`` ``(*, 3N - 6)``, ``ladj`` ``(*)``."""
        batch = x.shape[:-1]
        xyz = self._as_positions(x)
        aligned = kabsch_align(xyz[:, self.cartesian], self.reference)[0].reshape(xyz.shape[0], self.pca_mean.shape[0])
        zc = ((aligned - self.pca_mean) @ self.pca_vectors) / torch.sqrt(self.pca_values)
        r, th, ph = self._internal(xyz, self.z_matrix)
        ic = torch.stack(
            [
                (r - self.ic_mean[0]) / self.ic_std[0],
                (th - self.ic_mean[1]) / self.ic_std[1],
                wrap_angle(ph - self.ic_mean[2]) / self.ic_std[2],  # circular: in [-π, π), exactly
            ],
            dim=1,
        )  # (B, 3, M)
        z = torch.cat([zc, ic.reshape(xyz.shape[0], self.ic_mean.numel())], dim=-1)
        if self._permuted:  # circular torsions last
            z = z[:, self._coord_order]
        ladj = -(self._constant_ladj() + (2 * torch.log(r) + torch.log(torch.sin(th))).sum(-1))
        self._check_output(xyz, z, ladj)
        return z.reshape(*batch, self.dim), ladj.reshape(batch)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Flow coordinates ``(*, 3N - 6)`` → ``(positions (*, 3N) nm in the reference frame, ladj (*))``.

        The Z-matrix atoms are placed level by level (see :meth:`_build_levels`): one batched NeRF call per
        level, with index tensors precomputed once (no host reads of buffers per call).
        """
        check_features(z, self.dim, "z")
        self._check_ready(z, "z")
        batch = z.shape[:-1]
        z = z.reshape(-1, self.dim)
        if self._permuted:
            z = z[:, self._coord_unorder]
        b = z.shape[0]
        zc, zi = z[:, : self.n_cartesian_dims], z[:, self.n_cartesian_dims :]
        cart = (zc * torch.sqrt(self.pca_values)) @ self.pca_vectors.T + self.pca_mean
        ic = zi.reshape(b, 3, self.ic_std.shape[1]) * self.ic_std + self.ic_mean  # (B, 3, M)
        r, th, ph = ic.unbind(1)
        placed = cart.reshape(b, len(self.cartesian), 3)  # (B, m, 3), grows in placement order
        by_level = ic[:, :, self._ic_order]  # (B, 3, M), rows grouped by level
        start = 0
        for size in self._level_sizes:
            refs = self._level_refs[:, start : start + size]  # (3, L) placement-order indices
            j, k, t = placed[:, refs[0]], placed[:, refs[1]], placed[:, refs[2]]  # (B, L, 3) each
            rr, tt, pp = by_level[:, :, start : start + size].unbind(1)  # (B, L) each
            placed = torch.cat([placed, place(j, k, t, rr, tt, pp)], dim=1)
            start += size
        x = placed[:, self._unorder].reshape(*batch, 3 * self.n_atoms)
        ladj = self._constant_ladj() + (
            2 * torch.log(torch.abs(r)) + torch.log(torch.abs(torch.sin(th)))
        ).sum(-1)
        return x, ladj.reshape(batch)

    @property
    def circular_indices(self) -> tuple[int, ...]:
        r"""Flow coordinates that are angles in :math:`[-\pi, \pi)`: the last :attr:`n_circular`."""
        return tuple(range(self.dim - self.n_circular, self.dim))

    def out_of_branch(self, z: torch.Tensor) -> torch.Tensor:
        r"""``(*)`` bool: flow coordinates ``z`` ``(*, 3N - 6)`` with a torsion outside its principal branch
        :math:`\varphi - \bar\varphi \in [-\pi, \pi)`. Such a point places the same atoms as the point with the torsion
        wrapped, so a density on the flow coordinates counts that conformation more than once (always False for a
        circular transform fed by a flow that keeps its circular coordinates in :math:`[-\pi, \pi)`)."""
        check_features(z, self.dim, "z")
        n_z = self.ic_std.shape[1]
        if self._permuted:
            z = z[..., self._coord_unorder]
        t = z[..., self.dim - n_z :] * self.ic_std[2]
        return ((t < -torch.pi) | (t >= torch.pi)).any(-1)

    def extra_repr(self) -> str:
        return (
            f"n_atoms={self.n_atoms}, cartesian={self.cartesian.tolist()}, dim={self.dim}, circular={self.n_circular}"
        )
