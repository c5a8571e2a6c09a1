"""The reader: what each record holds, that records are frozen, the OBC constants parsed from the expressions,
and refusals named by force (the TorchEnergy tests check the rest of the refusals through the constructor)."""

import dataclasses
import math

import openmm
import pytest
import torch

from p4lightning.systems.forcefield import (
    GB_TEMPLATES,
    BondTerm,
    openmm_coulomb_constant,
    pair_indices,
    read_system,
)


def test_records_hold_the_systems_parameters_and_are_frozen():
    system = openmm.System()
    for _ in range(4):
        system.addParticle(12.0)
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, 0.1, 1000.0)
    bonds.addBond(2, 1, 0.2, 2000.0)
    torsions = openmm.PeriodicTorsionForce()
    torsions.addTorsion(0, 1, 2, 3, 3, 0.5, 2.0)
    nb = openmm.NonbondedForce()
    for q, sigma, eps in [(0.5, 0.3, 0.4), (-0.5, 0.2, 0.9), (0.1, 0.25, 0.1), (0.0, 0.3, 0.0)]:
        nb.addParticle(q, sigma, eps)
    nb.addException(0, 1, 0.0, 1.0, 0.0)
    nb.addException(2, 0, 0.02, 0.31, 0.05)
    for force in (torsions, openmm.CMMotionRemover(), nb, bonds):
        system.addForce(force)
    ff = read_system(system)
    assert ff.n_atoms == 4 and ff.terms == ("torsion", "nonbonded", "bond")
    assert ff.angles is None and ff.gb is None
    assert isinstance(ff.bonds, BondTerm)
    assert ff.bonds.index.tolist() == [[0, 1], [2, 1]] and ff.bonds.index.dtype == torch.long
    assert ff.bonds.r0.tolist() == [0.1, 0.2] and ff.bonds.k.tolist() == [1000.0, 2000.0]
    assert ff.bonds.r0.dtype == torch.float64
    assert ff.torsions.periodicity.tolist() == [3.0] and ff.torsions.phase.tolist() == [0.5]
    pairs = pair_indices(4).tolist()  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert pairs == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    f = openmm_coulomb_constant()
    nbt = ff.nonbonded
    assert nbt.keep.tolist() == [False, True, False, True, False, False]  # atom 3: q = eps = 0
    assert math.isclose(float(nbt.qq[1]), 0.02 * f, rel_tol=1e-15)  # the exception, not 0.5 * 0.1
    assert float(nbt.sigma[1]) == 0.31 and float(nbt.four_eps[1]) == 4 * 0.05
    assert math.isclose(float(nbt.qq[3]), -0.05 * f, rel_tol=1e-15)  # Lorentz-Berthelot for (1, 2)
    assert math.isclose(float(nbt.sigma[3]), 0.225, rel_tol=1e-15)
    assert math.isclose(float(nbt.four_eps[3]), 4 * math.sqrt(0.09), rel_tol=1e-15)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ff.bonds.k = torch.zeros(2)  # type: ignore[misc]


def test_obc1_constants_are_parsed_from_the_openmm_app_expressions(ala2):
    gb = read_system(ala2.system).gb
    c = gb.constants
    assert (c.alpha, c.beta, c.gamma, c.offset) == (0.8, 0.0, 2.909125, 0.009)
    assert (c.eps_in, c.eps_out) == (1.0, 78.5)
    assert gb.charge.shape == gb.rho.shape == gb.scaled.shape == (22,)
    assert set(GB_TEMPLATES) == {"I", "B", "self", "surface", "pair"}


def test_refusals_name_the_force():
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    system.addForce(openmm.HarmonicBondForce())
    system.addForce(openmm.HarmonicBondForce())
    with pytest.raises(ValueError, match=r"force 1 \(HarmonicBondForce\): TorchEnergy reads at most one"):
        read_system(system)
    lonely = openmm.System()
    for _ in range(2):
        lonely.addParticle(12.0)
    gb = openmm.GBSAOBCForce()
    for _ in range(2):
        gb.addParticle(0.0, 0.15, 0.8)
    lonely.addForce(gb)
    with pytest.raises(ValueError, match="needs the NonbondedForce"):
        read_system(lonely)
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 5, 0.1, 1.0)
    out_of_range = openmm.System()
    for _ in range(2):
        out_of_range.addParticle(12.0)
    out_of_range.addForce(bonds)
    with pytest.raises(ValueError, match=r"bond_idx: particle index out of range \[0, 2\)"):
        read_system(out_of_range)


def test_torch_energy_takes_a_force_field_and_copies_its_tensors(ala2):
    from p4lightning.systems.torch_energy import TorchEnergy

    ff = read_system(ala2.system)
    from_ff, from_system = TorchEnergy(ff, 600.0), TorchEnergy(ala2.system, 600.0)
    assert list(from_ff.state_dict()) == list(from_system.state_dict())
    x = torch.as_tensor(ala2.positions)[None]
    assert torch.equal(from_ff.potential(x), from_system.potential(x))
    from_ff.bond_k.zero_()  # the module's buffers are its own
    assert float(ff.bonds.k.min()) > 0.0
    assert float(from_ff.terms_kj(x)["bond"]) == 0.0
