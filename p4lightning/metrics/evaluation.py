r"""The evaluation of a Boltzmann generator against held-out MD: one path for validation figures, ``sample`` and
``evaluate``.

:func:`score` turns arrays — generated positions, their reduced energies and :math:`\ln q`; held-out MD positions,
their energies and (when a model is at hand) their :math:`\ln q`; the energies of MD + Gaussian noise; optionally
a second, independent MD set of the same size — into the metric table of :mod:`p4lightning.metrics.definitions`,
with the number of samples and each metric's *floor*: its value between the two independent MD sets (what a
perfect sampler would score at that sample size). :func:`evaluate_model` scores one draw of a model
(:func:`~p4lightning.metrics.draw.draw`, made there or passed in: what ``p4lightning sample`` writes is what it
scores) with the energies of the model's energy op; :func:`p4lightning.plots.molecules.plot_evaluations` draws the energy violins and Ramachandran
histograms (paper Fig. 6).

Energies are those of the Hamiltonian in :data:`HAMILTONIAN`, in k_BT at the model's temperature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p4lightning.metrics.definitions import (
    energy_shift,
    energy_statistics,
    energy_w2,
    forward_ess,
    log_weight_robust_std,
    nll,
    phi_positive_fraction,
    ramachandran_histogram,
    ramachandran_kl,
    ramachandran_tv,
    replica_bootstrap_fraction,
    reverse_ess,
    reverse_ess_interval,
    reweighted_fraction,
    u_log_q_correlation,
    weight_concentration,
)
from p4lightning.metrics.draw import Draw, draw
from p4lightning.systems.alanine import N_ATOMS
from p4lightning.systems.observables import phi_psi, same_labeling
from p4lightning.systems.protocol import energies

__all__ = ["HAMILTONIAN", "Evaluation", "evaluate_model", "floor_subset", "score", "write_json"]

HAMILTONIAN = (
    "openmmtools AlanineDipeptideImplicit (Amber ff96 + OBC1 implicit solvent), no constraints, no cutoff"
)
#: TA-BG's clipping of the largest log-weights for the clipped reverse ESS
ESS_CLIP_FRACTION = 1e-4
#: resamples of every bootstrap interval, and their seed (an evaluation is reproducible)
N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 2026


@dataclass
class Evaluation:
    """Arrays behind an evaluation (positions ``(N, 66)`` nm, energies ``(N,)`` k_BT) and its metric table."""

    samples_x: torch.Tensor
    samples_u: torch.Tensor
    samples_log_q: torch.Tensor | None
    md_x: torch.Tensor
    md_u: torch.Tensor
    md_log_q: torch.Tensor | None
    noisy_u: torch.Tensor
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    floor_x: torch.Tensor | None = None
    floor_u: torch.Tensor | None = None
    #: ``(N,)`` bool: samples placed from a torsion outside its principal branch (None: not known)
    samples_out_of_branch: torch.Tensor | None = None
    #: ``(F,)`` replica id of every held-out MD frame (None: one replica), for MD's bootstrap interval
    md_replica: torch.Tensor | None = None


def _rama(x: torch.Tensor) -> torch.Tensor:
    return ramachandran_histogram(*phi_psi(x.reshape(-1, N_ATOMS, 3).double()))


def score(ev: Evaluation, temperature: float, noise_nm: float) -> dict[str, Any]:
    """Fill and return ``ev.metrics``: the full table (see the module docstring)."""
    rama_md = _rama(ev.md_x)
    rama_s = _rama(ev.samples_x)
    stats_s = energy_statistics(ev.samples_u, ev.threshold)
    shift = energy_shift(ev.samples_u, ev.md_u)
    noise_shift = energy_shift(ev.noisy_u, ev.md_u)
    m: dict[str, Any] = {
        "hamiltonian": HAMILTONIAN,
        "temperature_K": temperature,
        "n_samples": len(ev.samples_u),
        "n_md": len(ev.md_u),
        "low_energy_threshold_kT": ev.threshold,
        "noise_nm": noise_nm,
        "samples": stats_s,
        "md": energy_statistics(ev.md_u, ev.threshold),
        "md_noise": energy_statistics(ev.noisy_u, ev.threshold),
        "shift_vs_md_kT": shift,
        "noise_shift_vs_md_kT": noise_shift,
        "mean_shift_over_noise_shift": shift["mean"] / noise_shift["mean"] if noise_shift["mean"] else math.nan,
        "ramachandran_kl": ramachandran_kl(rama_md, rama_s),
        "ramachandran_tv": ramachandran_tv(rama_md, rama_s),
        "phi_positive_fraction": {"samples": phi_positive_fraction(rama_s), "md": phi_positive_fraction(rama_md)},
        "energy_w2_kT": energy_w2(ev.samples_u, ev.md_u),
        "reverse_ess": None,
        "reverse_ess_clipped": None,
        "forward_ess": None,
        "nll_md": None,
    }
    g = torch.Generator().manual_seed(BOOTSTRAP_SEED)
    phi_md = phi_psi(ev.md_x.reshape(-1, N_ATOMS, 3).double())[0]
    replica = ev.md_replica if ev.md_replica is not None else torch.zeros(len(phi_md), dtype=torch.long)
    m["phi_positive_md"] = replica_bootstrap_fraction(phi_md >= 0, replica, N_BOOTSTRAP, g)
    m["out_of_branch_fraction"] = (
        float(ev.samples_out_of_branch.double().mean()) if ev.samples_out_of_branch is not None else None
    )
    labeled = same_labeling(ev.samples_x.reshape(-1, N_ATOMS, 3).double(), ev.md_x.reshape(-1, N_ATOMS, 3).double())
    m["other_labeling_fraction"] = 1.0 - float(labeled.double().mean())
    if ev.samples_log_q is not None:
        log_w = -ev.samples_u - ev.samples_log_q
        # the target restricted to MD's labeling (observables.py): samples with another labeling get weight 0
        log_w_labeled = torch.where(labeled, log_w, -math.inf)
        m["reverse_ess_labeled"] = reverse_ess(log_w_labeled)
        m["reverse_ess_labeled_interval95"] = reverse_ess_interval(log_w_labeled, N_BOOTSTRAP, g)
        m["reverse_ess_labeled_clipped"] = reverse_ess(log_w_labeled, ESS_CLIP_FRACTION)
        m["reverse_ess"] = reverse_ess(log_w)
        m["reverse_ess_interval95"] = reverse_ess_interval(log_w, N_BOOTSTRAP, g)
        m["reverse_ess_clipped"] = reverse_ess(log_w, ESS_CLIP_FRACTION)
        m.update(weight_concentration(log_w))
        m["log_weight_robust_std"] = log_weight_robust_std(log_w)
        m["corr_u_log_q"] = u_log_q_correlation(ev.samples_u, ev.samples_log_q)
        phi_s = phi_psi(ev.samples_x.reshape(-1, N_ATOMS, 3).double())[0]
        m["phi_positive_reweighted"] = reweighted_fraction(phi_s >= 0, log_w_labeled, N_BOOTSTRAP, g)
    if ev.md_log_q is not None:
        m["nll_md"] = nll(ev.md_log_q)
        m["forward_ess"] = forward_ess(-ev.md_u - ev.md_log_q)
    if ev.floor_x is not None and ev.floor_u is not None:
        rama_f = _rama(ev.floor_x)
        m["floor"] = {
            "what": "the same metrics for an independent MD set of n frames (n = samples, or all its frames if fewer) "
            "in place of the samples",
            "n": len(ev.floor_u),
            "ramachandran_kl": ramachandran_kl(rama_md, rama_f),
            "ramachandran_tv": ramachandran_tv(rama_md, rama_f),
            "phi_positive_fraction": phi_positive_fraction(rama_f),
            "energy_w2_kT": energy_w2(ev.floor_u, ev.md_u),
            "shift_vs_md_kT": energy_shift(ev.floor_u, ev.md_u),
            "low_energy_fraction": energy_statistics(ev.floor_u, ev.threshold)["low_energy_fraction"],
        }
    ev.metrics = m
    return m


@torch.no_grad()
def evaluate_model(
    model: Any,
    md_x: torch.Tensor,
    n_samples: int,
    noise_nm: float = 0.004,
    seed: int = 0,
    floor_x: torch.Tensor | None = None,
    chunk: int = 2048,
    md_replica: torch.Tensor | None = None,
    samples: Draw | None = None,
) -> Evaluation:
    """Score ``n_samples`` conformations of ``model`` (a ``BoltzmannGenerator`` after ``setup``, or anything with
    ``sample_with_coordinates``, ``transform``, ``log_density``, ``energy`` (a
    :class:`~p4lightning.systems.protocol.ReducedEnergy`) and ``data_energy_max``) against held-out MD ``md_x``
    ``(N, 66)`` nm (``md_replica`` ``(N,)``: each frame's replica id); ``floor_x``: an independent MD set, of which
    :func:`floor_subset` takes as many frames as there are samples (all, if it has fewer) to give each metric's
    floor at the samples' size.

    The samples are ``samples`` when given (a :class:`~p4lightning.metrics.draw.Draw` of this model, e.g. the one
    ``p4lightning sample`` writes; ``n_samples`` must be its length), else drawn here with the generator seeded by
    ``seed`` after the noise of the noisy-MD set. ``chunk``: samples per flow pass and MD frames per density pass.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    if samples is not None and len(samples) != n_samples:
        raise ValueError(f"samples holds {len(samples)} samples but n_samples is {n_samples}")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    md_x = md_x.reshape(len(md_x), -1).to(device)
    noisy = md_x + noise_nm * torch.randn(md_x.shape, generator=g, dtype=md_x.dtype).to(device)
    if samples is None:
        samples = draw(model, n_samples, g, chunk)
    md_log_q = torch.cat([model.log_density(md_x[i : i + chunk]).double() for i in range(0, len(md_x), chunk)])
    ev = Evaluation(
        samples_x=samples.x.cpu(),
        samples_u=samples.u.cpu(),
        samples_log_q=samples.log_q.cpu(),
        md_x=md_x.cpu(),
        md_u=energies(model.energy, md_x.double()).double().cpu(),
        md_log_q=md_log_q.cpu(),
        noisy_u=energies(model.energy, noisy.double()).double().cpu(),
        threshold=float(model.data_energy_max),
        samples_out_of_branch=samples.out_of_branch,
        md_replica=md_replica,
    )
    if floor_x is not None:
        ev.floor_x = floor_subset(floor_x, n_samples, g)
        ev.floor_u = energies(model.energy, ev.floor_x.double().to(device)).double().cpu()
    score(ev, float(model.hparams.temperature), noise_nm)
    ev.metrics.update(_term_shifts(model, ev))
    return ev


def floor_subset(floor_x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``min(n, len(floor_x))`` frames ``(k, 66)`` of the independent MD set, drawn without replacement: the floor
    of a metric is its value for an exact sampler with as many samples as the model was given."""
    flat = floor_x.reshape(len(floor_x), -1).cpu()
    if n >= len(flat):
        return flat
    return flat[torch.randperm(len(flat), generator=generator)[:n]]


def _term_shifts(model: Any, ev: Evaluation) -> dict[str, Any]:
    """Mean shift of each force-field term (k_BT), samples vs MD: which terms carry the excess energy."""
    energy = getattr(model, "energy", None)
    if energy is None or not hasattr(energy, "terms_kj"):
        return {}
    device = next(model.parameters()).device

    def means(x: torch.Tensor) -> dict[str, float]:
        sums: dict[str, float] = {}
        for i in range(0, len(x), 4096):
            for k, v in energy.terms_kj(x[i : i + 4096].double().to(device)).items():
                v = v[torch.isfinite(v)]
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        return {k: v / len(x) / energy.kt for k, v in sums.items()}

    s, d = means(ev.samples_x), means(ev.md_x)
    return {"term_mean_shift_kT": {k: s[k] - d[k] for k in s}}


def write_json(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``metrics`` as JSON atomically (NaN/inf written as null)."""
    from p4lightning._io import atomic_path

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(dict(metrics)), indent=1))
    return path
