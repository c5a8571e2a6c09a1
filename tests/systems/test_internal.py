"""Internal coordinates: NeRF placement inverts the measurement; angles and torsions agree with mdtraj."""

import math

import mdtraj
import numpy as np
import torch

from p4lightning.systems.alanine import PHI_ATOMS, PSI_ATOMS
from p4lightning.systems.internal import angle, bond, place, torsion, wrap_angle
from p4lightning.systems.observables import phi_psi


def test_place_inverts_bond_angle_torsion():
    a, b, c, d = torch.randn(500, 4, 3).unbind(1)
    placed = place(c, b, a, bond(d, c), angle(d, c, b), torsion(d, c, b, a))
    torch.testing.assert_close(placed, d, atol=1e-12, rtol=0)


def test_torsion_is_symmetric_and_wraps():
    a, b, c, d = torch.randn(100, 4, 3).unbind(1)
    torch.testing.assert_close(torsion(a, b, c, d), torsion(d, c, b, a))
    phi = torch.tensor([math.pi - 1e-9, -math.pi + 1e-9, 3 * math.pi, 0.0])
    w = wrap_angle(phi)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    torch.testing.assert_close(torch.cos(w), torch.cos(phi))


def test_phi_psi_match_mdtraj(md_positions, short_md):
    traj = mdtraj.load(str(short_md.trajectory), top=str(short_md.topology))
    _, phi_md = mdtraj.compute_phi(traj)
    _, psi_md = mdtraj.compute_psi(traj)
    phi, psi = phi_psi(md_positions)
    # mdtraj computes in float32; compare on the circle
    assert np.abs(np.angle(np.exp(1j * (phi.numpy() - phi_md[:, 0])))).max() < 1e-4
    assert np.abs(np.angle(np.exp(1j * (psi.numpy() - psi_md[:, 0])))).max() < 1e-4
    idx_phi, idx_psi = mdtraj.compute_phi(traj)[0][0], mdtraj.compute_psi(traj)[0][0]
    assert tuple(idx_phi) == PHI_ATOMS and tuple(idx_psi) == PSI_ATOMS


def test_phi_psi_accepts_flat_and_rejects_bad_shapes():
    x = torch.randn(4, 66)
    phi, psi = phi_psi(x)
    assert phi.shape == psi.shape == (4,)
    import pytest

    with pytest.raises(ValueError, match=r"shape \(B, 22, 3\) or \(B, 66\)"):
        phi_psi(torch.randn(4, 65))


def test_check_topology_accepts_the_system_and_refuses_other_molecules_and_orders(tmp_path):
    from pathlib import Path

    import mdtraj
    import pytest

    from p4lightning.systems.alanine import check_topology

    root = Path(__file__).parents[2]
    check_topology(root / "data/ala2.pdb")
    check_topology(root / "data/ala2_600K_replicas/topology.pdb")
    swapped = mdtraj.load_topology(str(root / "data/ala2.pdb")).copy()
    atoms = list(swapped.atoms)
    atoms[8].name, atoms[10].name = "CB", "CA"  # CA and CB in each other's place
    with pytest.raises(ValueError, match="atom 8 is ALA C CB, expected ALA C CA"):
        check_topology(swapped)
    other = mdtraj.Topology()  # 22 atoms of another molecule (a chain of carbons)
    res = other.add_residue("UNK", other.add_chain())
    for i in range(22):
        other.add_atom(f"C{i}", mdtraj.element.carbon, res)
    with pytest.raises(ValueError, match="atom 0 is UNK C C0"):
        check_topology(other)
