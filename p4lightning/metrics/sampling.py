r"""Sample-quality metrics of a Boltzmann generator as torchmetrics (states are synchronised across ranks).

Thin stateful wrappers around :mod:`p4lightning.metrics.definitions`, the one place the metrics are defined:

* :class:`EnergyStatistics` — :func:`~p4lightning.metrics.definitions.energy_statistics` of reduced energies;
* :class:`EffectiveSampleSize` — :func:`~p4lightning.metrics.definitions.reverse_ess` of log-weights;
* :class:`RamachandranKL` — FAB's :func:`~p4lightning.metrics.definitions.ramachandran_kl` (64 × 64 bins) of
  reference (MD) and sample torsions, accumulated as histograms.

Extra keyword arguments go to ``torchmetrics.Metric`` (e.g. ``sync_on_compute=False`` for rank-local use).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from p4lightning.metrics.definitions import (
    RAMACHANDRAN_BINS,
    energy_statistics,
    ramachandran_histogram,
    ramachandran_kl,
    ramachandran_tv,
    reverse_ess,
)

__all__ = ["EffectiveSampleSize", "EnergyStatistics", "RamachandranKL"]


class EnergyStatistics(Metric):
    """:func:`~p4lightning.metrics.definitions.energy_statistics` of all reduced energies seen (k_BT)."""

    full_state_update = False

    def __init__(self, threshold: float = math.inf, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.add_state("energies", default=[], dist_reduce_fx="cat")

    def update(self, u: torch.Tensor) -> None:  # type: ignore[override]
        self.energies.append(u.detach().double().reshape(-1))

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        return energy_statistics(dim_zero_cat(self.energies), self.threshold)


class EffectiveSampleSize(Metric):
    """Normalised reverse (Kish) ESS of log-weights (non-finite weights count as 0), optionally clipped."""

    full_state_update = False

    def __init__(self, clip_fraction: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clip_fraction = clip_fraction
        self.add_state("log_weights", default=[], dist_reduce_fx="cat")

    def update(self, log_w: torch.Tensor) -> None:  # type: ignore[override]
        self.log_weights.append(log_w.detach().double().reshape(-1))

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(reverse_ess(dim_zero_cat(self.log_weights), self.clip_fraction), dtype=torch.float64)


class RamachandranKL(Metric):
    """FAB's Ramachandran KL(reference ‖ samples) (nats) and total variation from accumulated (φ, ψ) histograms."""

    full_state_update = False

    def __init__(self, bins: int = RAMACHANDRAN_BINS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins
        zeros = torch.zeros(bins, bins, dtype=torch.float64)
        self.add_state("reference_hist", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("sample_hist", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, phi: torch.Tensor, psi: torch.Tensor, reference: bool) -> None:  # type: ignore[override]
        hist = ramachandran_histogram(phi.reshape(-1), psi.reshape(-1), self.bins).to(self.reference_hist.device)
        if reference:
            self.reference_hist += hist
        else:
            self.sample_hist += hist

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(ramachandran_kl(self.reference_hist, self.sample_hist), dtype=torch.float64)

    def total_variation(self) -> float:
        """:func:`~p4lightning.metrics.definitions.ramachandran_tv` of the accumulated histograms."""
        return ramachandran_tv(self.reference_hist, self.sample_hist)
