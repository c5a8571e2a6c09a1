r"""The one place where a Boltzmann generator's sample quality is defined, as plain torch functions.

Every metric p4lightning reports — in validation, in the figures callback and in ``p4lightning evaluate`` — is
computed here. Notation: :math:`u(x) = E(x)/k_BT` the reduced energy (dimensionless, k_BT), :math:`q(x)` the
generator's density in Cartesian coordinates (nm⁻⁶⁰ over the 60 internal degrees of freedom),
:math:`\ln w = -u - \ln q` the unnormalised log importance weight.

* **Energy statistics** of reduced energies: mean and median, 90th/99th percentiles, fraction non-finite, and the
  **low-energy fraction** — the fraction of finite energies below a threshold (the paper, Fig. 6: the highest
  energy of the training data). Non-finite energies count as high.
* **Energy shift** against a reference set: the difference of means (over finite energies) and of medians.
* **Reverse ESS** (Kish), normalised: :math:`\mathrm{ESS}/N = (\sum_i w_i)^2 / (N \sum_i w_i^2)` for samples of
  :math:`q`; with ``clip_fraction`` the largest :math:`k = \lfloor N\cdot\text{clip}\rfloor` log-weights are set to
  the smallest of them first (TA-BG, ``clipping_fraction=1e-4``; no clipping when :math:`k \le 1`).
* **Bootstrap interval** of the reverse ESS: the 2.5th and 97.5th percentiles of the ESS of ``n_boot`` resamples
  (with replacement) of the :math:`N` log-weights. At small ESS the estimate is dominated by a few weights and its
  interval is wide: an ESS is reported with it, on :math:`\ge 10^5` samples.
* **Robust spread** of the log-weights: :math:`1.4826\,\operatorname{median}|\ln w - \operatorname{median}\ln w|`
  (the standard deviation for Gaussian :math:`\ln w`, blind to a few outliers). For Gaussian log-weights of
  standard deviation :math:`\sigma` the ESS is :math:`e^{-\sigma^2}`: 50 % needs :math:`\sigma \lesssim 0.83`.
* **corr(u, ln q)**: the rank (Spearman) correlation of the samples' energies and log-densities; :math:`-1` for a
  perfect generator (:math:`\ln q = -u - \ln Z`). Ranks, because a handful of clashes at :math:`u \sim 10^6` would
  decide a Pearson correlation alone.
* **Reweighted fraction** of an observable :math:`A \in \{0, 1\}` (e.g. φ ≥ 0):
  :math:`\sum_i w_i A(x_i) / \sum_i w_i` — the unbiased estimate a user computes with a generator — with a bootstrap
  interval over samples; for MD the plain fraction with a bootstrap interval over *whole replicas* (frames within a
  replica are correlated; independent replicas are not).
* **Forward ESS**, normalised, from samples of the target (MD frames):
  :math:`\mathrm{ESS}_\text{fwd}/N = 1 / (\overline{w}\cdot\overline{w^{-1}})` — the target's normaliser cancels
  (Midgley et al. 2023, from :math:`\mathbb E_p[q/\tilde p] = 1/Z`).
* **NLL** of held-out MD: :math:`-\overline{\ln q(x)}` in nats per conformation, Cartesian (the coordinate
  transform's log-determinant included).
* **Ramachandran KL**, FAB's definition: density histograms :math:`\hat p, \hat q` of :math:`(\varphi, \psi)` on
  64 × 64 bins of :math:`[-\pi, \pi]^2`, :math:`\mathrm{KL}(\text{MD}\,\|\,\text{samples}) = \sum_b \hat p_b
  \ln\frac{\hat p_b + \varepsilon}{\hat q_b + \varepsilon}\,\Delta^2` with :math:`\varepsilon = 10^{-10}` and
  bin area :math:`\Delta^2 = (2\pi/64)^2`.
* **Ramachandran total variation** (CMT): :math:`\tfrac12 \sum_b |P_b - Q_b|` over the same bins' probabilities.
* **Energy W2**: the Wasserstein-2 distance between the empirical distributions of two sets of reduced energies
  (k_BT), :math:`W_2^2 = \int_0^1 (F^{-1}(t) - G^{-1}(t))^2\,dt`, exact for the two step quantile functions.

References: Krämer, Köhler & Noé, arXiv:2010.07033 (Fig. 6); Midgley et al., arXiv:2208.01893 (FAB: ESS,
Ramachandran KL); Schopmans & Friederich, arXiv:2501.19077 (TA-BG: clipped reverse ESS); arXiv:2510.18460
(CMT: Ramachandran TV, the anchors).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "RAMACHANDRAN_BINS",
    "RAMACHANDRAN_EPS",
    "log_weight_robust_std",
    "replica_bootstrap_fraction",
    "reverse_ess_interval",
    "reweighted_fraction",
    "u_log_q_correlation",
    "energy_shift",
    "energy_statistics",
    "energy_w2",
    "forward_ess",
    "low_energy_fraction",
    "nll",
    "phi_positive_fraction",
    "ramachandran_histogram",
    "ramachandran_kl",
    "ramachandran_tv",
    "reverse_ess",
    "weight_concentration",
]

#: FAB's Ramachandran grid and ε
RAMACHANDRAN_BINS = 64
RAMACHANDRAN_EPS = 1e-10


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-d tensor; got shape {tuple(x.shape)}")
    return x.detach().double()


def energy_statistics(u: torch.Tensor, threshold: float = math.inf) -> dict[str, float]:
    r"""Statistics of reduced energies ``u`` ``(N,)`` (k_BT): the mean over finite values; median, 90th and 99th
    percentiles by nearest rank (the :math:`\lceil pN \rceil`-th smallest, non-finite values counted as +∞);
    the non-finite fraction and the low-energy fraction."""
    u = _flat(u, "u")
    if len(u) == 0:
        raise ValueError("u must hold at least one energy")
    finite = torch.isfinite(u)
    high = torch.where(finite, u, torch.full_like(u, math.inf))
    ordered = high.sort().values

    def quantile(p: float) -> float:  # nearest rank: the ceil(p N)-th smallest; +inf if that one is non-finite
        return float(ordered[max(0, math.ceil(p * len(u)) - 1)])

    return {
        "n": len(u),
        "mean": float(u[finite].mean()) if bool(finite.any()) else math.nan,
        "median": quantile(0.5),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
        "nonfinite_fraction": float((~finite).double().mean()),
        "low_energy_fraction": low_energy_fraction(u, threshold),
    }


def low_energy_fraction(u: torch.Tensor, threshold: float) -> float:
    """Fraction of ``u`` ``(N,)`` that is finite and below ``threshold`` (k_BT)."""
    u = _flat(u, "u")
    return float((torch.isfinite(u) & (u < threshold)).double().mean()) if len(u) else math.nan


def energy_shift(u: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """``mean(u) - mean(reference)`` (finite values) and ``median(u) - median(reference)`` in k_BT."""
    a, b = energy_statistics(u), energy_statistics(reference)
    return {"mean": a["mean"] - b["mean"], "median": a["median"] - b["median"]}


def reverse_ess(log_w: torch.Tensor, clip_fraction: float | None = None) -> float:
    r"""Normalised Kish ESS :math:`(\sum w)^2 / (N \sum w^2) \in [1/N, 1]` of log-weights ``(N,)`` of samples of q.

    Non-finite log-weights (failed energies) count as weight 0. ``clip_fraction``: TA-BG's clipping of the
    largest ``floor(N * clip_fraction)`` log-weights to the smallest of them (applied when that is > 1).
    """
    lw = _flat(log_w, "log_w")
    lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))
    if len(lw) == 0 or not bool(torch.isfinite(lw).any()):
        return 0.0
    if clip_fraction is not None:
        if not 0 <= clip_fraction < 1:
            raise ValueError(f"clip_fraction must be in [0, 1); got {clip_fraction}")
        k = int(len(lw) * clip_fraction)
        if k > 1:
            lw = torch.clamp(lw, max=float(torch.topk(lw, k).values.min()))
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / len(lw))


def _bootstrap(
    statistic: Callable[..., torch.Tensor],
    arrays: tuple[torch.Tensor, ...],
    n_boot: int,
    generator: torch.Generator | None,
    block: int = 50,
) -> list[float]:
    """``statistic`` (of ``(b, N)`` resampled rows, → ``(b,)``) on ``n_boot`` resamples with replacement of the ``(N,)``
    ``arrays`` (the same indices for all), ``block`` resamples at a time (memory: block·N); NaN counts as 0."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(arrays[0])
    values: list[float] = []
    while len(values) < n_boot:
        idx = torch.randint(n, (min(block, n_boot - len(values)), n), generator=g)
        values += torch.nan_to_num(statistic(*(a[idx] for a in arrays)), nan=0.0).tolist()
    return values


def _interval(values: list[float], level: float) -> list[float]:
    v = torch.tensor(values, dtype=torch.float64)
    a = (1 - level) / 2
    return [float(torch.quantile(v, a)), float(torch.quantile(v, 1 - a))]


def reverse_ess_interval(
    log_w: torch.Tensor, n_boot: int = 1000, generator: torch.Generator | None = None, level: float = 0.95
) -> list[float]:
    """``[low, high]``: the percentile bootstrap interval (``level``) of :func:`reverse_ess` over ``n_boot`` resamples
    of the log-weights ``(N,)`` (non-finite ones count as weight 0)."""
    lw = _flat(log_w, "log_w")
    lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))
    if len(lw) == 0 or not bool(torch.isfinite(lw).any()):
        return [0.0, 0.0]
    def ess(r: torch.Tensor) -> torch.Tensor:  # (b, N) -> (b,)
        return torch.exp(2 * torch.logsumexp(r, 1) - torch.logsumexp(2 * r, 1)) / r.shape[1]

    return _interval(_bootstrap(ess, (lw,), n_boot, generator), level)


def log_weight_robust_std(log_w: torch.Tensor) -> float:
    r""":math:`1.4826 \cdot` the median absolute deviation of the finite log-weights ``(N,)`` (nats)."""
    lw = _flat(log_w, "log_w")
    lw = lw[torch.isfinite(lw)]
    if len(lw) == 0:
        return math.nan
    return float(1.4826 * (lw - lw.median()).abs().median())


def u_log_q_correlation(u: torch.Tensor, log_q: torch.Tensor) -> float:
    """Spearman (rank) correlation of reduced energies ``u`` ``(N,)`` and log-densities ``log_q`` ``(N,)`` over the
    samples where both are finite; ``-1`` for a perfect generator (ties ranked by position)."""
    u, lq = _flat(u, "u"), _flat(log_q, "log_q")
    if len(u) != len(lq):
        raise ValueError(f"u and log_q must have the same length; got {len(u)} and {len(lq)}")
    ok = torch.isfinite(u) & torch.isfinite(lq)
    if int(ok.sum()) < 2:
        return math.nan
    ranks = torch.stack([torch.argsort(torch.argsort(v[ok])) for v in (u, lq)]).double()
    return float(torch.corrcoef(ranks)[0, 1])


def reweighted_fraction(
    indicator: torch.Tensor,
    log_w: torch.Tensor,
    n_boot: int = 1000,
    generator: torch.Generator | None = None,
    level: float = 0.95,
) -> dict[str, float | list[float]]:
    r"""The self-normalised importance-sampling estimate :math:`\sum_i w_i A_i / \sum_i w_i` of the fraction where the
    boolean ``indicator`` ``(N,)`` holds, from the samples' log-weights ``(N,)``, with a percentile bootstrap
    interval over samples; ``{"value", "interval95"}`` (non-finite log-weights count as weight 0)."""
    a = _flat(indicator.to(torch.float64), "indicator")
    lw = _flat(log_w, "log_w")
    if len(a) != len(lw):
        raise ValueError(f"indicator and log_w must have the same length; got {len(a)} and {len(lw)}")
    lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))
    if not bool(torch.isfinite(lw).any()):
        return {"value": math.nan, "interval95": [math.nan, math.nan]}

    def estimate(lw_: torch.Tensor, a_: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(lw_, -1)
        return (w * a_).sum(-1)

    values = _bootstrap(estimate, (lw, a), n_boot, generator)
    return {"value": float(estimate(lw, a)), "interval95": _interval(values, level)}


def replica_bootstrap_fraction(
    indicator: torch.Tensor,
    replica: torch.Tensor,
    n_boot: int = 1000,
    generator: torch.Generator | None = None,
    level: float = 0.95,
) -> dict[str, float | int | list[float]]:
    """The fraction of MD frames where ``indicator`` ``(F,)`` holds, with a percentile bootstrap interval over whole
    replicas (``replica`` ``(F,)``: each frame's replica id): ``{"value", "interval95", "n_replicas"}``."""
    a = _flat(indicator.to(torch.float64), "indicator")
    rep = torch.as_tensor(replica).reshape(-1)
    if len(rep) != len(a):
        raise ValueError(f"indicator and replica must have the same length; got {len(a)} and {len(rep)}")
    ids, inverse = torch.unique(rep, return_inverse=True)
    k = len(ids)
    hits = torch.zeros(k, dtype=torch.float64).index_add_(0, inverse, a)
    frames = torch.zeros(k, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(a))
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    pick = torch.randint(k, (n_boot, k), generator=g)
    values = (hits[pick].sum(1) / frames[pick].sum(1)).tolist()
    return {"value": float(a.mean()), "interval95": _interval(values, level), "n_replicas": k}


def weight_concentration(log_w: torch.Tensor, top: int = 10) -> dict[str, float]:
    r"""Why an ESS is small: the standard deviation of the finite log-weights (nats) and the share of the total
    weight :math:`\sum w` held by the ``top`` largest weights (non-finite log-weights count as weight 0)."""
    lw = _flat(log_w, "log_w")
    finite = lw[torch.isfinite(lw)]
    if len(finite) == 0:
        return {"log_weight_std": math.nan, f"top{top}_weight_share": math.nan}
    w = torch.softmax(finite, 0)
    return {
        "log_weight_std": float(finite.std()) if len(finite) > 1 else 0.0,
        f"top{top}_weight_share": float(torch.topk(w, min(top, len(w))).values.sum()),
    }


def forward_ess(log_w: torch.Tensor) -> float:
    r"""Normalised forward ESS :math:`1/(\overline{w}\,\overline{w^{-1}})` of log-weights ``(N,)`` of *target* samples.

    A non-finite log-weight on a target sample means the model misses part of the target: the result is 0.
    """
    lw = _flat(log_w, "log_w")
    if len(lw) == 0 or not bool(torch.isfinite(lw).all()):
        return 0.0
    log_n = math.log(len(lw))
    return float(torch.exp(-(torch.logsumexp(lw, 0) - log_n) - (torch.logsumexp(-lw, 0) - log_n)))


def nll(log_q: torch.Tensor) -> float:
    """Mean negative log-likelihood ``-mean(log_q)`` (nats per conformation) of held-out frames ``(N,)``."""
    lq = _flat(log_q, "log_q")
    return float(-lq.mean())


def ramachandran_histogram(phi: torch.Tensor, psi: torch.Tensor, bins: int = RAMACHANDRAN_BINS) -> torch.Tensor:
    r"""Counts ``(bins, bins)`` of :math:`(\varphi, \psi)` (rad) on :math:`[-\pi, \pi]^2` (the edge π in the last bin);
    non-finite pairs are left out."""
    phi, psi = _flat(phi, "phi"), _flat(psi, "psi")
    if len(phi) != len(psi):
        raise ValueError(f"phi and psi must have the same length; got {len(phi)} and {len(psi)}")
    ok = torch.isfinite(phi) & torch.isfinite(psi)
    scale = bins / (2 * math.pi)
    i = ((phi[ok] + math.pi) * scale).floor().long().clamp(0, bins - 1)
    j = ((psi[ok] + math.pi) * scale).floor().long().clamp(0, bins - 1)
    return torch.bincount(i * bins + j, minlength=bins * bins).reshape(bins, bins).double()


def phi_positive_fraction(hist: torch.Tensor) -> float:
    """Fraction of a Ramachandran histogram's counts ``(bins, bins)`` with φ ≥ 0 (the sparse αL / C7ax basins; with
    an even number of bins on [−π, π] a bin edge lies at 0); NaN for an empty histogram."""
    total = float(hist.sum())
    return float(hist[hist.shape[0] // 2 :].sum()) / total if total else math.nan


def ramachandran_kl(
    reference: torch.Tensor, samples: torch.Tensor, eps: float = RAMACHANDRAN_EPS
) -> float:
    r"""FAB's :math:`\mathrm{KL}(\text{reference} \| \text{samples})` of two count histograms ``(bins, bins)`` on
    :math:`[-\pi, \pi]^2` (nats)."""
    p, q = _densities(reference, samples)
    area = (2 * math.pi / p.shape[0]) ** 2
    return float((p * torch.log((p + eps) / (q + eps))).sum() * area)


def ramachandran_tv(reference: torch.Tensor, samples: torch.Tensor) -> float:
    r"""Total variation :math:`\tfrac12\sum_b |P_b - Q_b|` of two count histograms ``(bins, bins)``, in [0, 1]."""
    p, q = _densities(reference, samples)
    area = (2 * math.pi / p.shape[0]) ** 2
    return float(0.5 * (p - q).abs().sum() * area)


def _densities(reference: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if reference.shape != samples.shape or reference.dim() != 2 or reference.shape[0] != reference.shape[1]:
        raise ValueError(
            f"histograms must be square and of the same shape; got {tuple(reference.shape)} and {tuple(samples.shape)}"
        )
    area = (2 * math.pi / reference.shape[0]) ** 2
    out = []
    for name, h in (("reference", reference), ("samples", samples)):
        total = float(h.sum())
        if total <= 0:
            raise ValueError(f"the {name} histogram is empty")
        out.append(h.double() / (total * area))
    return out[0], out[1]


def energy_w2(u: torch.Tensor, reference: torch.Tensor) -> float:
    r"""Wasserstein-2 distance (k_BT) between the empirical distributions of the finite values of ``u`` and
    ``reference`` (1-d, any sizes): exact integral of the squared difference of the two step quantile functions."""
    a, b = _flat(u, "u"), _flat(reference, "reference")
    a, b = a[torch.isfinite(a)].sort().values, b[torch.isfinite(b)].sort().values
    if len(a) == 0 or len(b) == 0:
        return math.nan
    # breakpoints of both quantile functions on (0, 1]; on each piece both are constant
    t = torch.cat([torch.arange(1, len(a) + 1, dtype=torch.float64) / len(a),
                   torch.arange(1, len(b) + 1, dtype=torch.float64) / len(b)]).unique().sort().values  # fmt: skip
    widths = torch.diff(t, prepend=t.new_zeros(1))
    mid = t - 0.5 * widths
    qa = a[(mid * len(a)).floor().long().clamp(max=len(a) - 1)]
    qb = b[(mid * len(b)).floor().long().clamp(max=len(b) - 1)]
    return float(torch.sqrt(((qa - qb).square() * widths).sum()))
