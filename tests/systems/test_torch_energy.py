"""TorchEnergy against OpenMM's Reference platform (float64), term by term and in total, energies and forces."""

import math
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
import torch

from p4lightning.systems.alanine import kt
from p4lightning.systems.torch_energy import TorchEnergy, openmm_coulomb_constant
from p4lightning.testing import openmm_reference

ROOT = Path(__file__).parents[2]


reference = openmm_reference  # (per-term energies, totals, forces) from OpenMM's Reference platform


@pytest.fixture(scope="module")
def frames():
    """Shipped MD frames; the same with 0.004 and 0.02 nm noise; frames with one pair pulled within 0.05 nm."""
    traj = mdtraj.load(str(ROOT / "data/ala2_600K.dcd"), top=str(ROOT / "data/ala2.pdb"))
    md = traj.xyz[::250].astype(np.float64)  # 40 frames
    rng = np.random.default_rng(0)
    pulled = md[:20].copy()
    for k, x in enumerate(pulled):  # atom i pulled to 0.05 nm of a non-bonded atom j
        i, j = (0, 15 + k % 7) if k % 2 else (5, 9 + k % 5)
        d = x[i] - x[j]
        x[i] = x[j] + 0.05 * d / np.linalg.norm(d)
    return {
        "md": md,
        "noise_0.004": md + 0.004 * rng.normal(size=md.shape),
        "noise_0.02": md + 0.02 * rng.normal(size=md.shape),
        "pulled_0.05": pulled,
    }


@pytest.mark.parametrize("kind", ["md", "noise_0.004", "noise_0.02", "pulled_0.05"])
def test_float64_terms_total_and_forces_match_openmm_reference(ala2, frames, kind, device):
    """On ``--device`` (cpu by default): the energy module and the positions moved there, compared on the host."""
    xyz = frames[kind]
    ref_terms, ref_total, ref_forces = reference(ala2.system, xyz)
    energy = TorchEnergy(ala2.system, 600.0).to(device)
    assert energy.device.type == device.type
    x = torch.tensor(xyz, requires_grad=True, device=device)
    terms = energy.terms_kj(x)
    assert set(terms) == set(ref_terms)
    abs_sum = sum(np.abs(v) for v in ref_terms.values())  # (B,) sum of |terms|
    for name, value in terms.items():
        assert value.device.type == device.type
        err = np.abs(value.detach().cpu().numpy() - ref_terms[name])
        assert (err <= 1e-9 * abs_sum).all(), (name, err.max(), abs_sum.min())
    total = energy.potential(x)
    assert (np.abs(total.detach().cpu().numpy() - ref_total) <= 1e-9 * abs_sum).all()
    (grad,) = torch.autograd.grad(total.sum(), x)
    assert np.abs(-grad.cpu().numpy() - ref_forces).max() <= 1e-8 * max(1.0, np.abs(ref_forces).max() / 1e4)
    u = energy(x)  # reduced
    np.testing.assert_allclose(u.detach().cpu().numpy(), ref_total / kt(600.0), rtol=1e-12, atol=1e-9)


def test_forces_to_1e8_kj_per_mol_nm_on_md_frames(ala2, frames):
    _, _, ref_forces = reference(ala2.system, frames["md"][:10])
    x = torch.tensor(frames["md"][:10], requires_grad=True)
    (grad,) = torch.autograd.grad(TorchEnergy(ala2.system, 600.0).potential(x).sum(), x)
    assert np.abs(-grad.numpy() - ref_forces).max() <= 1e-8


def test_float32_relative_error_and_float64_bonded_option(ala2, frames):
    """float32 total within 1e-5 of the sum of |terms| (the scale float32 round-off works on), forces within 1e-5
    of the conformation's largest |force|."""
    xyz = np.concatenate([frames["md"], frames["noise_0.004"], frames["noise_0.02"]])
    ref_terms, ref_total, ref_forces = reference(ala2.system, xyz)
    abs_sum = sum(np.abs(v) for v in ref_terms.values())
    f_scale = np.abs(ref_forces).max(axis=(1, 2), keepdims=True)
    for bonded64 in (False, True):
        energy = TorchEnergy(ala2.system, 600.0, bonded_float64=bonded64)
        e32, f32 = energy.potential_and_forces(torch.tensor(xyz, dtype=torch.float32))
        assert e32.dtype == f32.dtype == torch.float32
        rel = np.abs(e32.double().numpy() - ref_total) / abs_sum
        assert rel.max() <= 1e-5, (bonded64, rel.max())
        f_rel = np.abs(f32.double().numpy() - ref_forces) / f_scale  # relative to the largest |force|
        assert f_rel.max() <= 1e-5, (bonded64, f_rel.max())


def test_shapes_translation_empty_batch_and_nan_rows(ala2, frames):
    energy = TorchEnergy(ala2.system, 600.0)
    x = torch.tensor(frames["md"][:4])
    u = energy(x)
    torch.testing.assert_close(energy(x.reshape(4, 66)), u)
    torch.testing.assert_close(energy(x + 1e6), u, rtol=0, atol=1e-6)  # centred before evaluation
    assert energy(x[:0]).shape == (0,)
    bad = x.clone()
    bad[1, 3, 0] = float("nan")
    bad[2, 15] = bad[2, 0]  # coincident non-bonded atoms
    out = energy(bad)
    assert torch.isnan(out[1]) and not torch.isfinite(out[2])
    torch.testing.assert_close(out[[0, 3]], u[[0, 3]])
    with pytest.raises(ValueError, match=r"\(B, 22, 3\)"):
        energy(x[:, :21])


def test_coulomb_constant_is_openmms():
    assert math.isclose(openmm_coulomb_constant(), 138.935, rel_tol=1e-5)


def _system_with(force):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(12.0)
    system.addForce(force)
    return system


def test_unsupported_forces_cutoffs_and_expressions_are_refused_naming_the_force(ala2):
    with pytest.raises(ValueError, match=r"force 0 \(CustomBondForce\) is not supported"):
        TorchEnergy(_system_with(openmm.CustomBondForce("r^2")), 300.0)
    nb = openmm.NonbondedForce()
    for _ in range(3):
        nb.addParticle(0.1, 0.3, 0.5)
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffNonPeriodic)
    with pytest.raises(ValueError, match=r"NonbondedForce\): nonbonded method 1"):
        TorchEnergy(_system_with(nb), 300.0)
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))
    gb = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    expr, kind = gb.getEnergyTermParameters(2)
    gb.setEnergyTermParameters(2, expr.replace("exp(-r^2/(4*B1*B2))", "exp(-r^2/(8*B1*B2))"), kind)
    with pytest.raises(ValueError, match=r"CustomGBForce\): its expressions are not the OBC"):
        TorchEnergy(system, 600.0)
    box = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))
    box.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    for f in box.getForces():
        if isinstance(f, openmm.NonbondedForce):
            f.setNonbondedMethod(openmm.NonbondedForce.PME)
    with pytest.raises(ValueError, match="periodic"):
        TorchEnergy(box, 600.0)


def test_obc2_custom_gb_and_gbsaobcforce_systems_match_openmm(frames):
    """Other implicit-solvent models built by openmm.app from the same topology: OBC2 (a CustomGBForce with
    β ≠ 0) and OpenMM's built-in GBSAOBCForce (amber99_obc.xml)."""
    from openmm import app

    pdb = app.PDBFile(str(ROOT / "data/ala2.pdb"))
    systems = {
        "OBC2": app.ForceField("amber96.xml", "implicit/obc2.xml").createSystem(
            pdb.topology, constraints=None
        ),
        "GBSAOBCForce": app.ForceField("amber99sb.xml", "amber99_obc.xml").createSystem(
            pdb.topology, constraints=None
        ),
    }
    assert any(isinstance(f, openmm.GBSAOBCForce) for f in systems["GBSAOBCForce"].getForces())
    for name, system in systems.items():
        xyz = frames["noise_0.004"][:8]
        _, ref_total, ref_forces = reference(system, xyz)
        x = torch.tensor(xyz, requires_grad=True)
        e = TorchEnergy(system, 300.0).potential(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
        np.testing.assert_allclose(e.detach().numpy(), ref_total, rtol=1e-9, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(-grad.numpy(), ref_forces, rtol=1e-7, atol=1e-6, err_msg=name)


def _only(system, *names):
    """A copy of ``system`` keeping only the forces of the classes ``names``."""
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for index in reversed(range(copy.getNumForces())):
        if type(copy.getForce(index)).__name__ not in names:
            copy.removeForce(index)
    return copy


@pytest.mark.parametrize(
    "forces",
    [
        ("HarmonicBondForce",),
        ("HarmonicAngleForce",),
        ("PeriodicTorsionForce",),
        ("NonbondedForce",),
        ("NonbondedForce", "CustomGBForce"),
    ],
)
def test_analytic_gradient_is_the_autograd_gradient_of_the_energy_term_by_term(ala2, frames, forces):
    """Note [analytic gradient]: the hand-derived dE/dx of each force equals autograd's derivative of the same
    energy expressions, float64, on every frame set (pulled pairs included: forces up to ~1e12)."""
    energy = TorchEnergy(_only(ala2.system, *forces), 600.0)
    for kind, xyz in frames.items():
        x = torch.tensor(xyz, requires_grad=True)
        (auto,) = torch.autograd.grad(sum(energy.terms_kj(x).values()).sum(), x)
        e, f = energy.potential_and_forces(torch.tensor(xyz))
        assert f.shape == x.shape and not f.requires_grad and not e.requires_grad
        torch.testing.assert_close(e, sum(energy.terms_kj(torch.tensor(xyz)).values()), rtol=0, atol=0)
        scale = auto.abs().amax(dim=(1, 2), keepdim=True)  # per conformation
        assert ((f + auto).abs() <= 1e-11 * scale).all(), (forces, kind, ((f + auto).abs() / scale).max())


def test_potential_and_forces_layouts_collinear_angles_and_nan_rows(ala2, frames):
    energy = TorchEnergy(ala2.system, 600.0)
    x = torch.tensor(frames["md"][:4])
    e, f = energy.potential_and_forces(x)
    e_flat, f_flat = energy.potential_and_forces(x.reshape(4, 66))
    torch.testing.assert_close(e_flat, e)
    torch.testing.assert_close(f_flat, f.reshape(4, 66))
    torch.testing.assert_close(f.sum(1), torch.zeros(4, 3, dtype=f.dtype), rtol=0, atol=1e-9)  # no net force
    # an angle made exactly straight (theta = pi: a cusp, no gradient) contributes no force, not NaN
    # (the angle force alone: a torsion through three collinear atoms is undefined, NaN)
    angles = TorchEnergy(_only(ala2.system, "HarmonicAngleForce"), 600.0)
    i, j, k = angles.angle_idx[0].tolist()
    straight = x[:1].clone()
    straight[0, k] = 2 * straight[0, j] - straight[0, i]
    _, f_straight = angles.potential_and_forces(straight)
    assert torch.isfinite(f_straight).all()
    angles.angle_k[0] = 0.0
    torch.testing.assert_close(f_straight, angles.potential_and_forces(straight)[1], rtol=0, atol=0)
    bad = x.clone()
    bad[1, 3, 0] = float("nan")
    e_bad, f_bad = energy.potential_and_forces(bad)
    assert torch.isnan(e_bad[1]) and torch.isnan(f_bad[1]).all()
    torch.testing.assert_close(f_bad[[0, 2, 3]], f[[0, 2, 3]])


def test_gradient_through_potential_is_first_order_only(ala2, frames):
    energy = TorchEnergy(ala2.system, 600.0)
    x = torch.tensor(frames["md"][:3], requires_grad=True)
    u = energy(x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=False)
    _, f = energy.potential_and_forces(x.detach())
    torch.testing.assert_close(g, -f / energy.kt)
    with pytest.raises(RuntimeError, match="first order.*terms_kj"):
        (g2,) = torch.autograd.grad(energy(x).sum(), x, create_graph=True)
        g2.sum().backward()
    # terms_kj: autograd to second order (a Hessian-vector product is finite and symmetric in use)
    (g1,) = torch.autograd.grad(sum(energy.terms_kj(x).values()).sum(), x, create_graph=True)
    (hv,) = torch.autograd.grad((g1 * torch.ones_like(g1)).sum(), x)
    assert torch.isfinite(hv).all()


def test_compiled_energy_and_forces_match_eager(ala2, frames):
    """torch.compile (inductor, fullgraph): the forward-only energy + forces, and u with its gradient."""
    energy = TorchEnergy(ala2.system, 600.0)
    x = torch.tensor(frames["noise_0.004"][:8])
    e, f = energy.potential_and_forces(x)
    e_c, f_c = torch.compile(energy.potential_and_forces, fullgraph=True, dynamic=False)(x)
    torch.testing.assert_close(e_c, e, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f_c, f, rtol=1e-10, atol=1e-8)

    def u_and_grad(x):
        x = x.detach().requires_grad_(True)
        u = energy(x)
        (g,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), g

    u_c, g_c = torch.compile(u_and_grad, dynamic=False)(x.float())
    u_e, g_e = u_and_grad(x.float())
    torch.testing.assert_close(u_c, u_e, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-3)


def test_samples_of_a_trained_bg_and_their_high_energy_tail_match_openmm_reference(ala2):
    """Samples of the shipped paper P4Inv model: 100 drawn at random and the 100 highest-energy of 1,000 (its
    tail, up to ~1e2-1e3 k_BT), float64, terms, total and forces against OpenMM's Reference platform."""
    from p4lightning.models.boltzmann import BoltzmannGenerator

    torch.set_default_dtype(torch.float32)  # the model's (restored by the package conftest)
    model = BoltzmannGenerator.load_from_checkpoint(
        ROOT / "checkpoints/paper_p4inv.ckpt", map_location="cpu", weights_only=False
    )
    with torch.no_grad():
        x, _ = model.sample(1000, torch.Generator().manual_seed(0))
    x = x.double().reshape(-1, 22, 3)
    energy = TorchEnergy(ala2.system, 600.0)
    u = energy(x)
    tail = torch.argsort(torch.nan_to_num(u, nan=-1.0), descending=True)[:100]
    xyz = torch.cat([x[:100], x[tail]]).numpy()
    assert float(u[tail].min()) > float(u[:100].median()) + 10  # the tail is well above the bulk
    ref_terms, ref_total, ref_forces = reference(ala2.system, xyz)
    abs_sum = sum(np.abs(v) for v in ref_terms.values())
    for name, value in energy.terms_kj(torch.tensor(xyz)).items():
        assert (np.abs(value.numpy() - ref_terms[name]) <= 1e-9 * abs_sum).all(), name
    e, f = energy.potential_and_forces(torch.tensor(xyz))
    assert (np.abs(e.numpy() - ref_total) <= 1e-9 * abs_sum).all()
    f_scale = np.maximum(1.0, np.abs(ref_forces).max(axis=(1, 2), keepdims=True) / 1e4)
    assert (np.abs(f.numpy() - ref_forces) <= 1e-8 * f_scale).all()


def test_half_precision_and_non_tensor_positions_are_refused_naming_them(ala2, frames):
    """float16 overflows (NaN), bfloat16 is k_BT off, a numpy array has no autograd: each refused, named."""
    energy = TorchEnergy(ala2.system, 600.0)
    x = torch.tensor(frames["md"][:2])
    for dtype in (torch.float16, torch.bfloat16):
        for call in (energy, energy.potential, energy.potential_and_forces, energy.terms_kj):
            with pytest.raises(TypeError, match=rf"dtype {dtype}.*pass float32 or float64"):
                call(x.to(dtype))
    with pytest.raises(TypeError, match=r"a torch.Tensor of positions \(B, 22, 3\) nm; got numpy.ndarray"):
        energy(frames["md"][:2])
    assert int(energy.num_evaluated) == 0


def test_virtual_sites_are_refused_naming_the_particle():
    """OpenMM places a virtual site from its parents and hands its force on; TorchEnergy does neither."""
    system = openmm.System()
    for mass in (12.0, 12.0, 0.0):
        system.addParticle(mass)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, 0.15, 1000.0)
    bonds.addBond(1, 2, 0.05, 1000.0)
    system.addForce(bonds)
    with pytest.raises(ValueError, match=r"particle 2 is a virtual site.*use OpenMMEnergy"):
        TorchEnergy(system, 300.0)
