"""Sampling metrics: known values."""

import math

import torch

from p4lightning.metrics import EffectiveSampleSize, EnergyStatistics, TorsionKL


def test_energy_statistics():
    m = EnergyStatistics(threshold=2.5)
    m.update(torch.tensor([1.0, 2.0, 3.0]))
    m.update(torch.tensor([4.0, float("nan")]))
    out = m.compute()
    assert float(out["mean"]) == 2.5 and float(out["low_energy_fraction"]) == 2 / 5
    assert float(out["finite_fraction"]) == 4 / 5 and float(out["median"]) == 3.0


def test_ess_uniform_and_degenerate():
    m = EffectiveSampleSize()
    m.update(torch.zeros(100) + 3.0)
    assert abs(float(m.compute()) - 1.0) < 1e-12
    m = EffectiveSampleSize()
    m.update(torch.tensor([0.0, -1e4, -1e4, float("nan")]))
    assert abs(float(m.compute()) - 0.25) < 1e-12


def test_torsion_kl_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    phi, psi = (
        (torch.rand(5000, generator=g) * 2 - 1) * math.pi,
        (torch.rand(5000, generator=g) * 2 - 1) * math.pi,
    )
    m = TorsionKL(bins=12)
    m.update(phi, psi, reference=True)
    m.update(phi, psi, reference=False)
    assert abs(float(m.compute())) < 1e-5
    m = TorsionKL(bins=12)
    m.update(phi, psi, reference=True)
    m.update(0.1 * phi, 0.1 * psi, reference=False)
    assert float(m.compute()) > 1.0
