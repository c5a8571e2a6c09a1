r"""Sample-quality metrics of a Boltzmann generator, as torchmetrics (states are synchronised across ranks).

* :class:`EnergyStatistics`: mean and median reduced energy :math:`u` (k_BT) of generated samples, and the
  *low-energy fraction*, the fraction with :math:`u` below a threshold (the paper: the maximum energy of the
  training data).
* :class:`EffectiveSampleSize`: the normalised importance-sampling ESS of log-weights
  :math:`\ln w = -u(\mathbf{x}) - \ln q(\mathbf{x})`:
  :math:`\mathrm{ESS} = (\sum w)^2 / (N \sum w^2) \in [1/N, 1]`.
* :class:`TorsionKL`: :math:`\mathrm{KL}(p_\text{data} \| p_\text{samples})` between 2D histograms of
  :math:`(\varphi, \psi)` on :math:`[-\pi, \pi)^2`, with a small pseudo-count so empty sample bins stay finite.

Extra keyword arguments go to ``torchmetrics.Metric`` (e.g. ``sync_on_compute=False`` for rank-local use).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["EffectiveSampleSize", "EnergyStatistics", "TorsionKL"]


class EnergyStatistics(Metric):
    """Mean, median and low-energy fraction of reduced energies; non-finite energies count as high."""

    full_state_update = False

    def __init__(self, threshold: float = math.inf, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.add_state("energies", default=[], dist_reduce_fx="cat")

    def update(self, u: torch.Tensor) -> None:  # type: ignore[override]
        self.energies.append(u.detach().double().reshape(-1))

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        u = dim_zero_cat(self.energies)
        finite = torch.isfinite(u)
        safe = torch.where(finite, u, torch.full_like(u, math.inf))
        return {
            "mean": u[finite].mean() if bool(finite.any()) else u.new_tensor(math.nan),
            "median": safe.median(),
            "low_energy_fraction": (safe < self.threshold).double().mean(),
            "finite_fraction": finite.double().mean(),
        }


class EffectiveSampleSize(Metric):
    """Normalised ESS of importance weights given as log-weights (NaN/−inf weights count as 0)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("log_weights", default=[], dist_reduce_fx="cat")

    def update(self, log_w: torch.Tensor) -> None:  # type: ignore[override]
        self.log_weights.append(log_w.detach().double().reshape(-1))

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        lw = dim_zero_cat(self.log_weights)
        lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))
        if not bool(torch.isfinite(lw).any()):
            return lw.new_zeros(())
        return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / lw.numel()


class TorsionKL(Metric):
    """KL divergence between the (φ, ψ) histograms of reference data and of samples (nats)."""

    full_state_update = False

    def __init__(self, bins: int = 36, pseudo_count: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bins = bins
        self.pseudo_count = pseudo_count
        self.add_state(
            "data_hist", default=torch.zeros(bins, bins, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "sample_hist", default=torch.zeros(bins, bins, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def _hist(self, phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        scale = self.bins / (2 * math.pi)
        i = ((phi.detach().double() + math.pi) * scale).floor().long().clamp(0, self.bins - 1)
        j = ((psi.detach().double() + math.pi) * scale).floor().long().clamp(0, self.bins - 1)
        ok = torch.isfinite(phi) & torch.isfinite(psi)
        flat = torch.bincount((i * self.bins + j)[ok], minlength=self.bins * self.bins)
        return flat.reshape(self.bins, self.bins).to(torch.float64)

    def update(self, phi: torch.Tensor, psi: torch.Tensor, reference: bool) -> None:  # type: ignore[override]
        hist = self._hist(phi, psi).to(self.data_hist.device)
        if reference:
            self.data_hist += hist
        else:
            self.sample_hist += hist

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        p = self.data_hist / self.data_hist.sum().clamp(min=1)
        q = (self.sample_hist + self.pseudo_count) / (
            self.sample_hist.sum() + self.pseudo_count * self.bins**2
        )
        mask = p > 0
        return (p[mask] * (torch.log(p[mask]) - torch.log(q[mask]))).sum()
