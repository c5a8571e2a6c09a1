"""BatchedLangevin: the right temperature; a replica's trajectory does not depend on which replicas share its batch."""

import pytest
import torch

from p4lightning.simulation.langevin import BatchedLangevin
from p4lightning.systems.alanine import alanine_dipeptide
from p4lightning.systems.torch_energy import TorchEnergy


def test_batched_langevin_temperature_and_replica_independence():
    ala2 = alanine_dipeptide(600.0)
    energy = TorchEnergy(ala2.system, 600.0)

    def force(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy.potential(x).sum(), x)
        return -g

    masses = torch.tensor([ala2.system.getParticleMass(i)._value for i in range(22)])
    x0 = torch.as_tensor(ala2.positions).expand(3, 22, 3).clone()
    md = BatchedLangevin(force, masses, 600.0, 1e-3, 20.0, seeds=[11, 12, 13])  # strong friction: fast relaxation
    md.set_state(x0)
    md.step(500)  # the reference structure is not a minimum: let the thermostat take its excess energy
    temps = []
    for _ in range(60):
        md.step(25)
        temps.append(md.kinetic_temperature())
    temps = torch.stack(temps)
    # 180 samples (correlated over ~50 fs) of a 63-dof kinetic temperature: std ~ 600 sqrt(2/63) = 107 K each
    assert abs(float(temps.mean()) - 600.0) < 40.0, float(temps.mean())
    # replica 12 alone follows exactly the trajectory it has inside the batch of three
    solo = BatchedLangevin(force, masses, 600.0, 1e-3, 1.0, seeds=[12])
    solo.set_state(x0[:1])
    batch = BatchedLangevin(force, masses, 600.0, 1e-3, 1.0, seeds=[11, 12, 13])
    batch.set_state(x0)
    solo.step(50)
    batch.step(50)
    torch.testing.assert_close(solo.x[0], batch.x[1], rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        BatchedLangevin(force, masses, 600.0, 1e-3, 1.0, seeds=[1, 1])
