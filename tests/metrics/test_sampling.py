"""torchmetrics wrappers: the same numbers as the definitions, accumulated over updates."""

import math

import torch

from p4lightning.metrics import EffectiveSampleSize, EnergyStatistics, RamachandranKL
from p4lightning.metrics.definitions import ramachandran_histogram, ramachandran_kl


def test_energy_statistics_accumulates_and_counts_nonfinite_as_high():
    m = EnergyStatistics(threshold=2.5)
    m.update(torch.tensor([1.0, 2.0, 3.0]))
    m.update(torch.tensor([4.0, float("nan")]))
    out = m.compute()
    assert out["mean"] == 2.5 and out["low_energy_fraction"] == 2 / 5
    assert out["nonfinite_fraction"] == 1 / 5 and out["median"] == 3.0 and out["n"] == 5


def test_ess_uniform_and_degenerate():
    m = EffectiveSampleSize()
    m.update(torch.zeros(100) + 3.0)
    assert abs(float(m.compute()) - 1.0) < 1e-12
    m = EffectiveSampleSize()
    m.update(torch.tensor([0.0, -1e4, -1e4, float("nan")]))
    assert abs(float(m.compute()) - 0.25) < 1e-12


def test_ramachandran_metric_equals_the_definition_over_split_updates():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 4000, generator=g) * 2 - 1) * math.pi
    b = (torch.rand(2, 3000, generator=g) * 2 - 1) * 0.5 * math.pi
    m = RamachandranKL()
    m.update(a[0, :1000], a[1, :1000], reference=True)
    m.update(a[0, 1000:], a[1, 1000:], reference=True)
    m.update(b[0], b[1], reference=False)
    expected = ramachandran_kl(ramachandran_histogram(a[0], a[1]), ramachandran_histogram(b[0], b[1]))
    assert abs(float(m.compute()) - expected) < 1e-12 and expected > 1.0
