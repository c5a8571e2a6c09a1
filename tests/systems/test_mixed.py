"""Mixed coordinate transform: shared battery, exact Jacobian on the 60 independent coordinates, round trips."""

import pytest
import torch

from p4lightning.systems.alanine import CARTESIAN_ATOMS, Z_MATRIX_BACKBONE
from p4lightning.systems.mixed import MixedCoordinateTransform, kabsch_align, validate_z_matrix
from p4lightning.testing import check_inverse_ladj


@pytest.fixture(scope="module")
def transform(md_positions):
    return MixedCoordinateTransform.fit(md_positions, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)


def test_dimensions_and_whitening(transform, md_positions):
    z, _ = transform(md_positions.reshape(len(md_positions), -1))
    assert transform.dim == 60 and z.shape == (len(md_positions), 60)
    n_lin = 9 + 2 * 17  # Cartesian block, bonds, angles: linearly standardised on these data
    torch.testing.assert_close(z[:, :n_lin].mean(0), torch.zeros(n_lin), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(60), atol=1e-9, rtol=0)
    # torsions are centred on their circular mean, so their arithmetic mean is near, not at, zero
    assert z[:, n_lin:].mean(0).abs().max() < 0.2


def test_superposed_cartesian_block_has_exactly_six_null_directions(transform, md_positions):
    aligned = kabsch_align(md_positions[:, list(CARTESIAN_ATOMS)], transform.reference)[0].reshape(
        len(md_positions), -1
    )
    eig = torch.linalg.eigvalsh(torch.cov(aligned.T))
    assert eig[:6].abs().max() < 1e-12 * eig[-1]  # the six rigid-body directions vanish
    assert eig[6] > 1e6 * eig[:6].abs().max()


def test_round_trip_and_inverse_ladj_battery(transform, md_positions):
    x = md_positions.reshape(len(md_positions), -1)[:16]
    z, _ = transform(x)
    x_back, _ = transform.inverse(z)
    torch.testing.assert_close(x_back, transform.align(x), atol=1e-12, rtol=0)
    check_inverse_ladj(transform, x)
    # z -> x -> z for flow-space points (within the torsions' unwrapped range)
    zs = 0.8 * torch.randn(16, 60)
    limit = 0.9 * torch.pi / transform.ic_std[2]  # unwrapped torsions within ±0.9π map back to themselves
    zs[:, 9 + 2 * 17 :] = torch.maximum(torch.minimum(zs[:, 9 + 2 * 17 :], limit), -limit)
    torch.testing.assert_close(transform(transform.inverse(zs)[0])[0], zs, atol=1e-9, rtol=0)


def test_float32_round_trip_below_1e5_nm(transform, md_positions):
    t32 = MixedCoordinateTransform.fit(md_positions, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE).float()
    x = md_positions.reshape(len(md_positions), -1).float()
    err = (t32.inverse(t32(x)[0])[0] - t32.align(x)).abs().max()
    assert err < 1e-5


def test_inverse_ladj_equals_slogdet_of_jacobian_on_60_independent_coordinates(transform, md_positions):
    """The 66 x 60 Jacobian restricted to the coordinates (V^T (x_cart - mu), x_Z-matrix atoms)."""
    z, _ = transform(md_positions.reshape(len(md_positions), -1)[:3])
    others = [row[0] for row in Z_MATRIX_BACKBONE]

    def embed(zz):
        xx = transform.inverse(zz)[0].reshape(22, 3)
        cart = xx[list(CARTESIAN_ATOMS)].reshape(-1)
        return torch.cat([(cart - transform.pca_mean) @ transform.pca_vectors, xx[others].reshape(-1)])

    for zi in z:
        jac = torch.autograd.functional.jacobian(embed, zi)
        assert jac.shape == (60, 60)
        torch.testing.assert_close(torch.linalg.slogdet(jac)[1], transform.inverse(zi)[1], atol=1e-8, rtol=0)


def test_torsions_have_no_wrap_around_error(transform, md_positions):
    """Rotating a torsion by 2π does not change z (circular standardisation)."""
    x = md_positions.reshape(len(md_positions), -1)[:4]
    z, _ = transform(x)
    ic_t = z[:, 9 + 2 * 17 :]
    shifted = ic_t * transform.ic_std[2] + 2 * torch.pi  # same angle, shifted by a full turn
    zs = torch.cat([z[:, : 9 + 2 * 17], shifted / transform.ic_std[2]], dim=-1)
    torch.testing.assert_close(transform.inverse(zs)[0], transform.inverse(z)[0], atol=1e-9, rtol=0)


def test_shipped_z_matrix_follows_the_bond_graph(ala2):
    bonds = {frozenset((b.atom1.index, b.atom2.index)) for b in ala2.topology.bonds()}
    validate_z_matrix(Z_MATRIX_BACKBONE, CARTESIAN_ATOMS, 22, bonds)
    with pytest.raises(ValueError, match="not bonded"):
        validate_z_matrix([(7, 8, 6, 14), *Z_MATRIX_BACKBONE[1:]], CARTESIAN_ATOMS, 22, bonds)  # H7-CA8: no bond
    with pytest.raises(ValueError, match="not placed yet"):
        validate_z_matrix([Z_MATRIX_BACKBONE[2], *Z_MATRIX_BACKBONE], CARTESIAN_ATOMS, 22)
    with pytest.raises(ValueError, match="missing"):
        validate_z_matrix(Z_MATRIX_BACKBONE[:-1], CARTESIAN_ATOMS, 22)


def test_bad_inputs_raise(transform):
    with pytest.raises(ValueError, match=r"positions must have shape \(\*, 66\)"):
        transform(torch.randn(2, 60))
    x = torch.randn(2, 66)
    x[0, 5] = float("nan")
    with pytest.raises(ValueError, match="positions must be finite"):
        transform(x)
    with pytest.raises(ValueError, match=r"z must have shape \(\*, 60\)"):
        transform.inverse(torch.randn(2, 66))


def test_empty_then_fit_in_place_and_state_dict_round_trip(transform, md_positions):
    empty = MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)
    assert not bool(empty.fitted)
    empty.load_state_dict(transform.state_dict())
    assert bool(empty.fitted)
    x = md_positions.reshape(len(md_positions), -1)[:5]
    torch.testing.assert_close(empty(x)[0], transform(x)[0])
    refit = MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE).fit_(md_positions)
    torch.testing.assert_close(refit(x)[0], transform(x)[0])
    with pytest.raises(ValueError, match=r"positions must have shape \(F, 22, 3\) with F >= 15 frames"):
        refit.fit_(md_positions[:4])


def test_degenerate_geometry_is_named(transform, md_positions):
    """A zero bond (ladj +inf) and coincident Cartesian atoms (NaN) raise naming the atoms and the frame."""
    x = md_positions[:3].clone()
    x[1, 7] = x[1, 6]  # H of ALA on top of its bonded N: Z-matrix row 0
    with pytest.raises(ValueError, match=r"atoms 7 and 6 coincide in frame 1 \(Z-matrix row 0 of atom 7\)"):
        transform(x.reshape(3, -1))
    x = md_positions[:3].clone()
    x[2, 8] = x[2, 14]  # CA and C of ALA (both Cartesian, both references of O and N)
    with pytest.raises(ValueError, match=r"coincide in frame 2"):
        transform(x.reshape(3, -1))


def test_fit_refuses_identical_frames(md_positions):
    same = md_positions[:1].expand(40, 22, 3).clone()
    with pytest.raises(ValueError, match="identical or rigidly moved frames"):
        MixedCoordinateTransform.fit(same, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)
    moved = md_positions[:40].clone()
    moved[:, 0] = moved[0, 0] - moved[0, 1] + moved[:, 1]  # HH31 rigid with CH3: its bond length is constant
    with pytest.raises(ValueError, match=r"the bond of Z-matrix atom 0 \(row 4\) is constant"):
        MixedCoordinateTransform.fit(moved, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)


def test_unfitted_transform_and_dtype_mismatch_raise(transform, md_positions):
    empty = MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)
    with pytest.raises(RuntimeError, match="not fitted"):
        empty(md_positions[:2].reshape(2, -1))
    with pytest.raises(RuntimeError, match="not fitted"):
        empty.inverse(torch.zeros(2, 60, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"positions are torch.float32 but the transform's statistics are torch.float64"):
        transform(md_positions[:2].reshape(2, -1).float())
    with pytest.raises(TypeError, match=r"z are torch.float32"):
        transform.inverse(torch.zeros(2, 60, dtype=torch.float32))


def test_levelled_inverse_matches_atom_by_atom_placement(transform):
    """The batched level-by-level placement equals placing the 17 Z-matrix atoms one at a time."""
    from p4lightning.systems.internal import place

    z = torch.randn(8, 60, dtype=torch.float64)
    x, _ = transform.inverse(z)
    cart = (z[:, :9] * transform.pca_values.sqrt()) @ transform.pca_vectors.T + transform.pca_mean
    r, th, ph = (z[:, 9:].reshape(8, 3, -1) * transform.ic_std + transform.ic_mean).unbind(1)
    atoms = dict(zip(CARTESIAN_ATOMS, cart.reshape(8, -1, 3).unbind(1), strict=True))
    for row, (i, j, k, t) in enumerate(Z_MATRIX_BACKBONE):
        atoms[i] = place(atoms[j], atoms[k], atoms[t], r[:, row], th[:, row], ph[:, row])
    expected = torch.stack([atoms[a] for a in range(22)], dim=1).reshape(8, 66)
    torch.testing.assert_close(x, expected, atol=1e-14, rtol=0)
    assert transform._level_sizes == (7, 4, 6)


def test_empty_batch_gives_empty_outputs(transform):
    z, ladj = transform(torch.zeros(0, 66, dtype=torch.float64))
    assert z.shape == (0, 60) and ladj.shape == (0,)
    x, ladj = transform.inverse(torch.zeros(0, 60, dtype=torch.float64))
    assert x.shape == (0, 66) and ladj.shape == (0,)


# --- the standard Z-matrix and torsions on the circle -------------------------------------------------------------
from p4lightning.systems.alanine import SIBLING_TORSION_ATOMS, Z_MATRIX_STANDARD  # noqa: E402
from p4lightning.systems.internal import torsion  # noqa: E402


@pytest.fixture(scope="module")
def circular(md_positions):
    return MixedCoordinateTransform.fit(md_positions, CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=True)


def test_standard_z_matrix_follows_the_bond_graph_with_sibling_torsions(ala2):
    bonds = {frozenset((b.atom1.index, b.atom2.index)) for b in ala2.topology.bonds()}
    validate_z_matrix(Z_MATRIX_STANDARD, CARTESIAN_ATOMS, 22, bonds)
    siblings = [row for row in Z_MATRIX_STANDARD if frozenset((row[1], row[3])) in bonds]
    assert {row[0] for row in siblings} == set(SIBLING_TORSION_ATOMS["standard"])
    assert not [r for r in Z_MATRIX_BACKBONE if frozenset((r[1], r[3])) in bonds] and not SIBLING_TORSION_ATOMS["backbone"]
    with pytest.raises(ValueError, match="bonded neither"):
        bad = list(Z_MATRIX_STANDARD)
        bad[8] = (12, 10, 8, 7)  # HB2's torsion to ALA H: bonded neither to CA nor to CB
        validate_z_matrix(bad, CARTESIAN_ATOMS, 22, bonds)


def test_standard_z_matrix_leaves_only_the_rotors_broad():
    """Circular standard deviation sqrt(-2 ln R) of each Z-matrix torsion on the shipped 600 K MD (1,000 frames of
    data/ala2_600K.dcd): the sibling-relative table has the three methyl rotors and psi broad (> 1 rad); the
    backbone table smears every methyl hydrogen and ALA O. (A seconds-long run is too short: whether a rotor turns
    in 12 ps depends on the trajectory, which changes with the OpenMM release.)"""
    from pathlib import Path

    from p4lightning.data.md_datamodule import load_positions

    root = Path(__file__).parents[2]
    x = torch.tensor(load_positions([root / "data/ala2_600K.dcd"], root / "data/ala2.pdb", 22, 10), dtype=torch.float64)

    def broad(z_matrix):
        zm = torch.tensor(z_matrix)
        t = torsion(*(x[:, zm[:, c]] for c in range(4)))
        r = torch.sqrt(torch.cos(t).mean(0) ** 2 + torch.sin(t).mean(0) ** 2)
        return {z_matrix[i][0] for i in torch.nonzero(torch.sqrt(-2 * torch.log(r)) > 1.0).flatten().tolist()}

    assert {0, 11, 19, 16} == broad(Z_MATRIX_STANDARD)  # the three methyl rotors and psi (phi: two basins)
    assert len(broad(Z_MATRIX_BACKBONE)) >= 9


def test_circular_transform_puts_torsions_in_the_principal_branch_and_round_trips(circular, md_positions):
    x = md_positions.reshape(len(md_positions), -1)
    z, ladj = circular(x)
    angles = z[:, circular.circular_indices]
    assert circular.circular_indices == tuple(range(43, 60))
    assert float(angles.min()) >= -torch.pi and float(angles.max()) < torch.pi
    torch.testing.assert_close(circular.ic_std[2], torch.ones(17))
    torch.testing.assert_close(circular.inverse(z)[0], circular.align(x), atol=1e-12, rtol=0)
    check_inverse_ladj(circular, x[:8])
    assert not bool(circular.out_of_branch(z).any())
    # any point of the torus maps back to itself: z -> x -> z
    zs = 0.8 * torch.randn(16, 60)
    zs[:, 43:] = torch.rand(16, 17) * 2 * torch.pi - torch.pi
    torch.testing.assert_close(circular(circular.inverse(zs)[0])[0], zs, atol=1e-9, rtol=0)


def test_circular_density_is_equal_at_plus_minus_pi(circular):
    """A torsion coordinate at -π and at +π is the same conformation: the same positions and the same ladj."""
    zs = 0.5 * torch.randn(4, 60)
    zs[:, 43:] = 0.0
    lo, hi = zs.clone(), zs.clone()
    lo[:, 50], hi[:, 50] = -torch.pi, torch.pi
    (xa, la), (xb, lb) = circular.inverse(lo), circular.inverse(hi)
    torch.testing.assert_close(xa, xb, atol=1e-12, rtol=0)
    torch.testing.assert_close(la, lb)
    back = circular(xb)[0][:, 50]
    assert float(back.min()) >= -torch.pi and float(back.max()) < torch.pi  # the branch is [-π, π)
    on_circle = torch.remainder(back + torch.pi + 0.5, 2 * torch.pi) - 0.5  # distance from -π along the circle
    assert float(on_circle.abs().max()) < 1e-9


def test_out_of_branch_counts_unwrapped_torsions(transform):
    z = torch.zeros(3, 60)
    z[1, 59] = 1.01 * torch.pi / transform.ic_std[2, -1]
    z[2, 45] = -1.01 * torch.pi / transform.ic_std[2, 2]
    assert transform.out_of_branch(z).tolist() == [False, True, True]


def test_chosen_circular_torsions_come_last_and_round_trip(md_positions):
    proper = [r[0] for r in Z_MATRIX_STANDARD if r[0] not in SIBLING_TORSION_ATOMS["standard"]]
    t = MixedCoordinateTransform.fit(md_positions, CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=proper)
    assert t.n_circular == 9 and t.circular_indices == tuple(range(51, 60))
    x = md_positions.reshape(len(md_positions), -1)
    z, _ = t(x)
    assert float(z[:, 51:].abs().max()) <= torch.pi
    torch.testing.assert_close(t.inverse(z)[0], t.align(x), atol=1e-12, rtol=0)
    check_inverse_ladj(t, x[:8])
    # the standardised sibling torsions (43..50) are the all-circular transform's angles divided by their std
    full = MixedCoordinateTransform.fit(md_positions, CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=True)
    zf, _ = full(x)
    rows = [i for i, r in enumerate(Z_MATRIX_STANDARD) if r[0] in SIBLING_TORSION_ATOMS["standard"]]
    torch.testing.assert_close(z[:, 43:51] * t.ic_std[2, rows], zf[:, [43 + r for r in rows]])
    assert not bool(t.out_of_branch(z).any())
    far = z.clone()
    far[0, 44] = 1.01 * torch.pi / t.ic_std[2, rows[1]]
    assert t.out_of_branch(far).tolist()[:2] == [True, False]
    with pytest.raises(ValueError, match="does not place"):
        MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=[6])


def test_circular_option_is_saved_and_checked_on_load(circular, transform):
    state = circular.state_dict()
    assert bool(state["circular_torsions"].all())
    other = MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_STANDARD)
    with pytest.raises(ValueError, match="circular torsions"):
        other.load_state_dict(state)
    legacy = {k: v for k, v in transform.state_dict().items() if k != "circular_torsions"}  # before the option
    fresh = MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_BACKBONE)
    fresh.load_state_dict(legacy)
    assert fresh.n_circular == 0 and bool(fresh.fitted)
    one_flag = {**state, "circular_torsions": torch.tensor(True)}  # saved as a single flag earlier
    MixedCoordinateTransform.empty(22, CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=True).load_state_dict(one_flag)
