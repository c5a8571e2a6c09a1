"""The energy contract: make_energy builds ops that satisfy ReducedEnergy, energies() chunks and moves devices
without changing numbers, and the Boltzmann generator holds its op outside its module tree."""

import pytest
import torch

from p4lightning.systems.alanine import alanine_dipeptide
from p4lightning.systems.protocol import ReducedEnergy, energies, make_energy
from p4lightning.systems.torch_energy import TorchEnergy


@pytest.fixture(scope="module")
def ala2():
    return alanine_dipeptide(600.0)


def _positions(ala2, n=5):
    x0 = torch.as_tensor(ala2.positions, dtype=torch.float64)
    return x0 + 0.01 * torch.randn(
        n, *x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )


def test_torch_op_satisfies_the_protocol_and_counts_its_evaluations(ala2):
    op = make_energy("torch", ala2.system, 600.0)
    assert isinstance(op, ReducedEnergy) and isinstance(op, TorchEnergy)
    x = _positions(ala2)
    u = energies(op, x, chunk=2)
    direct = TorchEnergy(ala2.system, 600.0)
    with torch.no_grad():  # the same chunks by hand (a batch's size moves the last bit of the float64 sums)
        expected = torch.cat([direct(x[i : i + 2]) for i in range(0, 5, 2)])
    torch.testing.assert_close(u, expected, rtol=0, atol=0)
    assert u.shape == (5,) and int(op.num_evaluated) == 5
    op.close()


def test_energies_is_differentiable_free_and_refuses_a_bad_chunk(ala2):
    op = make_energy("torch", ala2.system, 600.0)
    x = _positions(ala2).requires_grad_()
    assert not energies(op, x).requires_grad
    assert op(x).requires_grad  # the op itself is differentiable
    assert energies(op, x[:0]).shape == (0,)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        energies(op, x, chunk=0)


def test_make_energy_refuses_an_unknown_kind_naming_it(ala2):
    with pytest.raises(ValueError, match="'gromacs'"):
        make_energy("gromacs", ala2.system, 600.0)  # type: ignore[arg-type]


def test_openmm_op_satisfies_the_protocol(ala2):
    op = make_energy("openmm", ala2.system, 600.0, n_workers=1)
    try:
        assert isinstance(op, ReducedEnergy) and op.device == torch.device("cpu")
        x = _positions(ala2, 3)
        u = energies(op, x)
        torch.testing.assert_close(u, TorchEnergy(ala2.system, 600.0)(x), rtol=1e-4, atol=1e-3)
        assert int(op.num_evaluated) == 3
    finally:
        op.close()


def test_the_model_holds_its_op_outside_the_module_tree_and_moves_it_along():
    from p4lightning.models.boltzmann import BoltzmannGenerator

    torch.set_default_dtype(torch.float32)
    model = BoltzmannGenerator(n_blocks=1, hidden=[8], energy="torch")
    keys = set(model.state_dict())
    model.energy = model.make_energy()
    assert isinstance(model.energy, ReducedEnergy)
    assert set(model.state_dict()) == keys and not any(k.startswith("energy.") for k in keys)
    assert all(m is not model.energy for m in model.modules())
    model.load_state_dict(model.state_dict())  # strict: no energy keys needed or refused
    model.to(torch.float64)
    assert next(model.flow.parameters()).dtype == torch.float64
    assert model.energy.pair_owner.dtype == torch.float64  # the op keeps its own dtype
    model.to("cpu")
    assert model.energy.device == torch.device("cpu")
    model.to("meta")  # a device move on a CPU-only machine: the op follows the model
    assert model.energy.device == torch.device("meta")
    model.teardown("fit")
    assert model.energy is None
