"""A short alanine-dipeptide trajectory (seconds to generate) and the system, shared by the molecular tests."""

import mdtraj
import pytest
import torch

from p4lightning.simulation import simulate
from p4lightning.systems.alanine import alanine_dipeptide


@pytest.fixture(scope="session")
def ala2():
    return alanine_dipeptide(600.0)


@pytest.fixture(scope="session")
def short_md(tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "short.dcd"
    result = simulate(out, frames=240, save_every=50, equilibration_steps=500, seed=3, progress=False)
    return result


@pytest.fixture(scope="session")
def md_positions(short_md):
    traj = mdtraj.load(str(short_md.trajectory), top=str(short_md.topology))
    return torch.tensor(traj.xyz, dtype=torch.float64)
