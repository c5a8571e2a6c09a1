"""OpenMM energy op: values and forces against OpenMM itself, gradients, parallel = serial, failures, errors."""

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from p4lightning.systems.alanine import kt
from p4lightning.systems.energy import OpenMMEnergy, regularize_energy
from p4lightning.systems.workers import EnergyWorkerPool, WorkerDiedError, evaluate_serially


@pytest.fixture(scope="module")
def energy(ala2):
    with OpenMMEnergy(ala2.system, temperature=600.0, n_workers=2) as e:
        yield e


def _openmm_reference(system, xyz):
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    energies, forces = [], []
    for frame in xyz:
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(energies), np.array(forces)


def test_system_has_no_constraints_and_keeps_xh_bonds(ala2):
    assert ala2.system.getNumConstraints() == 0
    bond_force = next(f for f in ala2.system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    assert bond_force.getNumBonds() == 21  # all 21 bonds of the 22-atom tree, X-H included


def test_energies_and_forces_match_openmm(energy, ala2, md_positions):
    x = md_positions[:12].clone().requires_grad_(True)
    u = energy(x)
    e_ref, f_ref = _openmm_reference(ala2.system, md_positions[:12].numpy())
    np.testing.assert_allclose(u.detach().numpy() * kt(600.0), e_ref, rtol=1e-5, atol=1e-3)
    u.sum().backward()
    np.testing.assert_allclose(-x.grad.numpy() * kt(600.0), f_ref, rtol=1e-4, atol=1e-2)


def test_gradient_matches_finite_differences(ala2, md_positions):
    """On the double-precision Reference platform (the CPU platform's forces are single precision)."""
    with OpenMMEnergy(ala2.system, temperature=600.0, n_workers=1, platform="Reference") as energy:
        x = md_positions[:2].clone().requires_grad_(True)
        energy(x).sum().backward()
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
            direction /= direction.norm()
            h = 1e-6
            up, down = energy(md_positions[:2] + h * direction), energy(md_positions[:2] - h * direction)
            fd = float((up - down).sum()) / (2 * h)
            assert abs(fd - float((x.grad * direction).sum())) < 1e-5 * max(1.0, abs(fd))


def test_parallel_equals_serial(ala2, energy, md_positions):
    with EnergyWorkerPool(ala2.system, n_workers=1) as serial:
        e1, f1, _ = serial.evaluate(md_positions[:9].numpy())
    e2, f2, _ = energy.pool.evaluate(md_positions[:9].numpy())
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(f1, f2)


def test_lean_openmm_calls_equal_the_public_api(ala2, md_positions):
    """The compiled entry points the workers call give the public wrappers' numbers bit for bit."""
    context = openmm.Context(
        ala2.system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("CPU"),
        {"Threads": "1"},
    )
    xyz = md_positions[:6].numpy().copy()
    xyz[2, 3] = np.nan  # a failure in the middle must not shift or reuse neighbours' results
    xyz[4] *= 0.05  # atoms squeezed together: huge, but finite, energy
    e_lean, f_lean, n_lean = evaluate_serially(context, xyz, lean=True)
    e_pub, f_pub, n_pub = evaluate_serially(context, xyz, lean=False)
    np.testing.assert_array_equal(e_lean, e_pub)
    np.testing.assert_array_equal(f_lean, f_pub)
    assert n_lean == n_pub == 1 and np.isnan(e_lean[2]) and not f_lean[2].any()
    state = (context.setPositions(xyz[5]), context.getState(getEnergy=True, getForces=True))[1]
    assert e_lean[5] == state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_flat_and_float32_inputs(energy, md_positions):
    u3 = energy(md_positions[:4])
    u2 = energy(md_positions[:4].reshape(4, 66).float())
    assert u2.dtype == torch.float32 and u2.shape == (4,)
    torch.testing.assert_close(u2.double(), u3, atol=1e-3, rtol=1e-5)


def test_failed_conformation_is_nan_and_counted_never_reused(energy, md_positions):
    before = int(energy.num_failed)
    x = md_positions[:3].clone()
    x[1, 4, 2] = float("nan")
    x.requires_grad_(True)
    u = energy(x)
    assert torch.isnan(u[1]) and torch.isfinite(u[[0, 2]]).all()
    assert int(energy.num_failed) == before + 1
    reg, clamped = regularize_energy(u)
    reg.sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad[1].abs().sum()) == 0.0
    assert clamped.tolist() == [False, True, False]


def test_regularize_energy_is_linear_then_log_then_capped():
    u = torch.tensor([0.0, 10.0, 1e3 + np.e - 1, 1e30, float("inf"), float("nan")], requires_grad=True)
    reg, clamped = regularize_energy(u, high=1e3, maximum=1e6)
    torch.testing.assert_close(
        reg[:4].detach(), torch.tensor([0.0, 10.0, 1e3 + 1.0, 1e3 + np.log(1e30 - 1e3 + 1)])
    )
    assert float(reg[4]) == 1e6 and float(reg[5]) == 1e6  # non-finite -> the cap
    capped, _ = regularize_energy(torch.tensor([1e6]), high=10.0, maximum=12.0)  # 10 + ln(1e6 - 9) > 12
    assert float(capped) == 12.0
    assert clamped.tolist() == [False, False, True, True, True, True]
    reg.sum().backward()
    assert torch.isfinite(u.grad).all()
    with pytest.raises(ValueError, match="high < maximum"):
        regularize_energy(u, high=10.0, maximum=1.0)


def test_bad_shapes_raise_naming_the_atom_count(energy):
    with pytest.raises(
        ValueError,
        match=r"\(B, 22, 3\) or \(B, 66\) in nm \(the system has 22 atoms\); got shape \(2, 21, 3\)",
    ):
        energy(torch.zeros(2, 21, 3))
    with pytest.raises(TypeError, match="floating-point"):
        energy(torch.zeros(2, 66, dtype=torch.long))


def test_dead_worker_is_reported_not_a_hang(ala2):
    pool = EnergyWorkerPool(ala2.system, n_workers=1)
    pool._processes[0].kill()
    with pytest.raises(WorkerDiedError, match="died|closed its pipe"):
        pool.evaluate(ala2.positions[None])
    assert pool.closed


def test_openmm_energy_empty_batch_and_translation(ala2):
    import torch

    from p4lightning.systems.energy import OpenMMEnergy

    x = torch.as_tensor(ala2.positions)[None]
    with OpenMMEnergy(ala2.system, 600.0, n_workers=1) as energy:
        assert energy(x[:0]).shape == (0,)
        far = energy(x + 1e6)  # centred before OpenMM's mixed-precision CPU platform sees it
        torch.testing.assert_close(far, energy(x), rtol=1e-6, atol=1e-4)


def test_hung_worker_times_out_naming_it_and_shutdown_leaves_no_process(ala2):
    """A stopped (SIGSTOP) worker: WorkerTimeoutError after timeout_s naming it; close() escalates to kill()."""
    import os
    import signal
    import time

    from p4lightning.systems.workers import WorkerTimeoutError

    pool = EnergyWorkerPool(ala2.system, n_workers=1, timeout_s=2.0)
    proc = pool._processes[0]
    os.kill(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(
        WorkerTimeoutError, match=rf"OpenMM worker 0 \(pid {proc.pid}\) took more than 2 s to answer"
    ):
        pool.evaluate(ala2.positions[None])
    assert pool.closed and not proc.is_alive()  # the stopped worker was killed, not left behind
    assert time.monotonic() - t0 < 12.0
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        EnergyWorkerPool(ala2.system, n_workers=1, timeout_s=0)


def test_script_without_main_guard_gets_an_error_naming_the_guard(tmp_path):
    """The README's pattern without `if __name__ == "__main__":`: spawned workers re-import the script."""
    import subprocess
    import sys

    script = tmp_path / "no_guard.py"
    script.write_text(
        "from p4lightning.systems.alanine import alanine_dipeptide\n"
        "from p4lightning.systems.energy import OpenMMEnergy\n"
        "energy = OpenMMEnergy(alanine_dipeptide(600.0).system, 600.0, n_workers=1)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "during start-up" in last and 'if __name__ == "__main__":' in last, out.stderr[-2000:]


@pytest.mark.parametrize("op", ["torch", "openmm"])
def test_coincident_atoms_give_zero_gradient_not_nan_through_the_regularised_energy(
    ala2, md_positions, energy, op
):
    """Two atoms on top of each other: the energy is not finite (or astronomically large); regularize_energy caps it,
    and the capped row contributes exactly zero gradient — with either energy op — while the other rows keep theirs."""
    from p4lightning.systems.torch_energy import TorchEnergy

    x = md_positions[:3].clone().float()
    x[1, 0] = x[1, 21]  # an ACE methyl hydrogen onto an NME methyl hydrogen (a non-bonded pair)
    x.requires_grad_(True)
    op_ = TorchEnergy(ala2.system, 600.0) if op == "torch" else energy
    u = op_(x)
    assert not bool(torch.isfinite(u[1])) or float(u[1]) > 1e9
    u_reg, clamped = regularize_energy(u, 1e3, 1e9)
    assert clamped.tolist() == [False, True, False]
    (grad,) = torch.autograd.grad(u_reg.sum(), x)
    assert bool(torch.isfinite(grad).all())
    assert float(grad[1].abs().max()) == 0.0 and float(grad[0].abs().max()) > 0


def test_empty_batch_gives_empty_results_without_work_for_the_workers(energy, ala2):
    energies, forces, failed = energy.pool.evaluate(np.zeros((0, 22, 3)))
    assert energies.shape == (0,) and forces.shape == (0, 22, 3) and failed == 0
    assert energies.dtype == forces.dtype == np.float64
    # nothing was sent: each worker's next answer is for the next batch, not a stale empty one
    energies, forces, failed = energy.pool.evaluate(np.repeat(ala2.positions[None], 2, axis=0))
    assert energies.shape == (2,) and np.isfinite(energies).all() and failed == 0
    with pytest.raises(ValueError, match=r"\(B, 22, 3\)"):
        energy.pool.evaluate(np.zeros((0, 21, 3)))


def _external_field_system(expression="x"):
    """One particle in the external field E = ``expression`` (kJ/mol, x in nm): not translation invariant."""
    system = openmm.System()
    system.addParticle(1.0)
    field = openmm.CustomExternalForce(expression)
    field.addParticle(0, [])
    system.addForce(field)
    return system


def test_positions_are_centred_only_where_the_energy_is_translation_invariant(ala2, energy):
    """E = x at x = 0.1 nm is 0.1 kJ/mol (centring would give 0); the force -dE/dx = -1 kJ/(mol nm)."""
    assert energy.centre_positions  # the alanine dipeptide: bonded, nonbonded, OBC (CustomGBForce) terms
    x = torch.tensor([[[0.1, 0.2, 0.3]]], dtype=torch.float64, requires_grad=True)
    with OpenMMEnergy(_external_field_system(), temperature=300.0, n_workers=1) as field:
        assert not field.centre_positions
        np.testing.assert_allclose(field.energies_kj_mol(x), [0.1], rtol=1e-6)
        u = field(x)
        torch.testing.assert_close(u, torch.tensor([0.1 / kt(300.0)], dtype=torch.float64), rtol=1e-6, atol=0)
        u.sum().backward()
        expected = torch.tensor([[[1.0 / kt(300.0), 0.0, 0.0]]], dtype=torch.float64)
        torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-12)


def test_translation_invariance_is_read_from_every_force_of_the_system(ala2):
    from p4lightning.systems.energy import translation_invariant

    assert translation_invariant(ala2.system)
    assert not translation_invariant(_external_field_system("0*x"))  # any CustomExternalForce
    mixed = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))
    mixed.addForce(openmm.CustomExternalForce("z"))
    assert not translation_invariant(mixed)
    gb = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))
    custom_gb = next(f for f in gb.getForces() if isinstance(f, openmm.CustomGBForce))
    custom_gb.addEnergyTerm("0.5*y^2", openmm.CustomGBForce.SingleParticle)  # a per-particle field in y
    assert not translation_invariant(gb)
    for expression, invariant in (("k*(distance(p1, p2) - 0.1)^2; k=100", True), ("x1 - x2", False)):
        compound = openmm.System()
        for _ in range(2):
            compound.addParticle(1.0)
        bond = openmm.CustomCompoundBondForce(2, expression)  # x1 - x2 is invariant, but any xi is refused
        bond.addBond([0, 1], [])
        compound.addForce(bond)
        assert translation_invariant(compound) is invariant
