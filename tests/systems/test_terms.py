"""Each term function alone against OpenMM's Reference platform (float64) on a tiny System holding only that
force, energies and forces; and each analytic gradient against autograd through the same function."""

import math

import numpy as np
import openmm
import pytest
import torch

from p4lightning.systems.forcefield import read_system
from p4lightning.systems.terms import (
    ANGLE_VECTORS,
    BOND_VECTORS,
    TORSION_VECTORS,
    angle_energy,
    bond_energy,
    nonbonded_energy,
    norm,
    obc_energy,
    torsion_energy,
)


def _system(n, *forces):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    for force in forces:
        system.addForce(force)
    return system


def _reference(system, xyz, group):
    """Energy ``(B,)`` and forces ``(B, N, 3)`` of force ``group`` (its index) on OpenMM's Reference platform."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for i, force in enumerate(system.getForces()):
        force.setForceGroup(i)
    ctx = openmm.Context(
        system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
    )
    energies, forces = [], []
    for x in xyz:
        ctx.setPositions(x)
        state = ctx.getState(getEnergy=True, getForces=True, groups={group})
        energies.append(state.getPotentialEnergy()._value)
        forces.append(state.getForces(asNumpy=True)._value)
    return np.array(energies), np.array(forces)


def _positions(n, batch=6, seed=0, spread=0.25):
    """``batch`` conformations of ``n`` atoms ``(B, N, 3)`` nm: a zig-zag chain 0.15 nm apart, jittered."""
    rng = np.random.default_rng(seed)
    chain = np.stack([0.15 * np.arange(n), 0.08 * (np.arange(n) % 2), 0.03 * np.arange(n) ** 1.5], axis=1)
    return chain + spread * 0.1 * rng.normal(size=(batch, n, 3))


def _batch_last(x):
    return x.permute(2, 1, 0)  # (3, N, B)


def _vectors(xt, index, spec):
    return [tuple(c[index[:, h]] - c[index[:, t]] for c in xt) for h, t in spec]


def _to_atoms(grads, index, spec, x):
    """Vector gradients (per ``spec``) summed to the atoms with index_add, ``(B, N, 3)``."""
    g = torch.zeros_like(_batch_last(x))
    for vec_grad, (h, t) in zip(grads, spec, strict=True):
        for c in range(3):
            g[c].index_add_(0, index[:, h], vec_grad[c])
            g[c].index_add_(0, index[:, t], -vec_grad[c])
    return g.permute(2, 1, 0)


def _pair_to_atoms(dedr, pairs, x):
    xt = _batch_last(x)
    i, j = pairs.T
    d = [c[i] - c[j] for c in xt]
    w = dedr / norm(tuple(d))
    g = torch.zeros_like(xt)
    for c in range(3):
        g[c].index_add_(0, i, w * d[c])
        g[c].index_add_(0, j, -w * d[c])
    return g.permute(2, 1, 0)


def _check(energy_fn, system, group, xyz, rtol=1e-11):
    """``energy_fn(x, grad) -> (E (B,), dE/dx (B, N, 3) | None)`` against OpenMM and against autograd."""
    ref_e, ref_f = _reference(system, xyz, group)
    x = torch.tensor(xyz, requires_grad=True)
    e, g = energy_fn(x.detach(), True)
    scale = np.abs(ref_e).max() + 1.0
    np.testing.assert_allclose(e.numpy(), ref_e, rtol=0, atol=1e-12 * scale)
    f_scale = np.abs(ref_f).max() + 1.0
    np.testing.assert_allclose(-g.numpy(), ref_f, rtol=0, atol=1e-9 * f_scale)
    e_auto, none = energy_fn(x, False)
    assert none is None
    torch.testing.assert_close(e_auto.detach(), e, rtol=0, atol=0)
    (auto,) = torch.autograd.grad(e_auto.sum(), x)
    assert ((g - auto).abs() <= rtol * auto.abs().amax(dim=(1, 2), keepdim=True)).all()


def test_bond_energy_matches_openmm_and_autograd():
    force = openmm.HarmonicBondForce()
    for i, (r0, k) in enumerate([(0.1, 3e5), (0.153, 2.6e5), (0.12, 4e4), (0.2, 1e3)]):
        force.addBond(i, i + 1, r0, k)
    system = _system(5, force)
    bonds = read_system(system).bonds

    def fn(x, grad):
        e, vg = bond_energy(bonds, *_vectors(_batch_last(x), bonds.index, BOND_VECTORS), grad)
        return e, (_to_atoms(vg, bonds.index, BOND_VECTORS, x) if grad else None)

    _check(fn, system, 0, _positions(5))


def test_angle_energy_matches_openmm_and_autograd():
    force = openmm.HarmonicAngleForce()
    for i, (t0, k) in enumerate([(1.9, 400.0), (2.1, 300.0), (math.pi * 0.6, 50.0)]):
        force.addAngle(i, i + 1, i + 2, t0, k)
    force.addAngle(4, 0, 2, 1.2, 100.0)  # a vertex away from the chain order
    system = _system(5, force)
    angles = read_system(system).angles

    def fn(x, grad):
        e, vg = angle_energy(angles, *_vectors(_batch_last(x), angles.index, ANGLE_VECTORS), grad)
        return e, (_to_atoms(vg, angles.index, ANGLE_VECTORS, x) if grad else None)

    _check(fn, system, 0, _positions(5, seed=1))


def test_torsion_energy_matches_openmm_and_autograd():
    force = openmm.PeriodicTorsionForce()
    for n, phase, k in [(1, 0.0, 2.0), (2, math.pi, 10.0), (3, 0.3, 1.5)]:
        force.addTorsion(0, 1, 2, 3, n, phase, k)
    force.addTorsion(1, 2, 3, 4, 2, -1.0, 4.0)
    force.addTorsion(4, 3, 1, 0, 4, math.pi / 2, 0.7)
    system = _system(5, force)
    torsions = read_system(system).torsions

    def fn(x, grad):
        e, vg = torsion_energy(torsions, *_vectors(_batch_last(x), torsions.index, TORSION_VECTORS), grad)
        return e, (_to_atoms(vg, torsions.index, TORSION_VECTORS, x) if grad else None)

    _check(fn, system, 0, _positions(5, seed=2))


def _nonbonded_force(n, seed=3):
    rng = np.random.default_rng(seed)
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(n):
        force.addParticle(rng.uniform(-0.8, 0.8), rng.uniform(0.1, 0.35), rng.uniform(0.1, 1.0))
    force.addException(0, 1, 0.0, 1.0, 0.0)  # excluded
    force.addException(3, 1, 0.05, 0.3, 0.2)  # scaled, listed as (j, i)
    return force


def test_nonbonded_energy_with_exceptions_matches_openmm_and_autograd():
    system = _system(6, _nonbonded_force(6))
    ff = read_system(system)
    nonbonded = ff.nonbonded
    assert not bool(nonbonded.keep[0]) and float(nonbonded.qq[0]) == 0.0  # pair (0, 1) is the first pair
    pairs = torch.triu_indices(6, 6, offset=1).T

    def fn(x, grad):
        xt = _batch_last(x)
        r = norm(tuple(c[pairs[:, 0]] - c[pairs[:, 1]] for c in xt))
        e, dedr = nonbonded_energy(nonbonded, r, grad)
        return e, (_pair_to_atoms(dedr, pairs, x) if grad else None)

    _check(fn, system, 0, _positions(6, seed=4))


def _obc_check(system, group, xyz):
    ff = read_system(system)
    n = ff.n_atoms
    pairs = torch.triu_indices(n, n, offset=1).T
    one_hot = torch.zeros(2, pairs.shape[0], n, dtype=torch.float64)
    one_hot[0, torch.arange(pairs.shape[0]), pairs[:, 0]] = 1.0
    one_hot[1, torch.arange(pairs.shape[0]), pairs[:, 1]] = 1.0
    owner = torch.cat([one_hot[0], one_hot[1]]).T

    def fn(x, grad):
        xt = _batch_last(x)
        r = norm(tuple(c[pairs[:, 0]] - c[pairs[:, 1]] for c in xt))
        e, dedr = obc_energy(ff.gb, r, pairs[:, 0], pairs[:, 1], owner, grad)
        return e, (_pair_to_atoms(dedr, pairs, x) if grad else None)

    _check(fn, system, group, xyz, rtol=1e-10)


def test_obc_energy_of_openmm_app_obc1_matches_openmm_and_autograd(ala2):
    """The CustomGBForce openmm.app writes for implicitSolvent=OBC1 (alanine dipeptide, 22 atoms) alone: the
    reader needs its NonbondedForce, the reference takes the GB force's group only."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))
    for index in reversed(range(system.getNumForces())):
        if type(system.getForce(index)).__name__ not in ("NonbondedForce", "CustomGBForce"):
            system.removeForce(index)
    group = next(i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.CustomGBForce))
    xyz = ala2.positions[None] + 0.01 * np.random.default_rng(5).normal(size=(6, 22, 3))
    _obc_check(system, group, xyz)


@pytest.mark.parametrize("surface_area", [0.0, 2.25936])
def test_obc_energy_of_a_gbsaobcforce_matches_openmm_and_autograd(surface_area):
    rng = np.random.default_rng(6)
    gb = openmm.GBSAOBCForce()
    gb.setSurfaceAreaEnergy(surface_area)
    for _ in range(6):
        gb.addParticle(rng.uniform(-0.8, 0.8), rng.uniform(0.12, 0.2), rng.uniform(0.7, 0.9))
    system = _system(6, _nonbonded_force(6), gb)
    _obc_check(system, 1, _positions(6, seed=7))
