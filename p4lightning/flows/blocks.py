r"""Flow builders: the paper's RealNVP/P⁴Inv flow (App. H, Fig. 7) and a spline flow with a choice of mixing.

**The paper's flow** (:func:`realnvp_flow`).

Each block is ``RNVP → mixer → RNVP → mixer`` on the 60-dimensional flow coordinates, where the mixer is
either a fixed channel :class:`~p4lightning.flows.permutation.Swap` (the RealNVP baseline) or a
:class:`~p4lightning.p4.inv.P4Inv` layer with bias initialised with the reverse permutation
:math:`A_{ij} = \delta_{i, n-1-j}` (the P⁴Inv model). With 25 blocks, :math:`\mathbf{t}` and :math:`\mathbf{s}`
networks of two hidden layers of 60, the RealNVP layers hold 735,000 parameters (the paper reports 735,050)
and the P⁴Inv layers exactly the paper's 9,000 (``u``, ``v``, ``b``: 25 × 2 × 180).

**The spline flow** (:func:`spline_flow`): ``n_couplings`` rational-quadratic spline couplings
(:class:`~p4lightning.flows.spline.SplineCoupling`) on coordinates whose Euclidean block comes first and whose
angles come last. Coupling :math:`2p` transforms one half of each block (a random half, drawn once per pair
:math:`p` from ``mask_seed``), coupling :math:`2p + 1` the other half. Between couplings, ``mixing``:

* ``"mask"``: nothing learned (the masks alone mix: FAB's and TA-BG's choice);
* ``"p4inv"``: a :class:`~p4lightning.p4.inv.P4Inv` (identity at start, with bias) on the Euclidean block, merged
  by :class:`~p4lightning.P4MergeCallback`;
* ``"lu"``: a :class:`~p4lightning.flows.linear.LULinear` (identity at start, with bias) on the Euclidean block.

Every variant is the same function at initialisation (the identity), with the same couplings and masks: they
differ only in what the mixing layers can learn. A dense map is no map of the torus, so the angles are mixed by
the masks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch

from p4lightning._validation import check_literal, check_nonnegative_int, check_positive_int
from p4lightning.bijection import Bijection
from p4lightning.flows.coupling import RealNVPCoupling
from p4lightning.flows.linear import LULinear
from p4lightning.flows.partial import LeadingBlock
from p4lightning.flows.permutation import Swap
from p4lightning.flows.sequential import SequentialFlow
from p4lightning.flows.spline import SplineCoupling
from p4lightning.flows.squash import AngleSquash
from p4lightning.p4.inv import P4Inv

__all__ = ["SPLINE_MIXINGS", "realnvp_flow", "spline_flow"]

#: the ``mixing`` choices of :func:`spline_flow`
RealNVPMixing = Literal["swap", "p4inv"]
SplineMixing = Literal["p4inv", "mask", "lu"]
SPLINE_MIXINGS: tuple[str, ...] = get_args(SplineMixing)


def realnvp_flow(
    dim: int = 60,
    n_blocks: int = 25,
    hidden: Sequence[int] = (60, 60),
    mixing: RealNVPMixing = "p4inv",
    p4inv_kwargs: dict[str, Any] | None = None,
    n_angles: int = 0,
) -> SequentialFlow:
    r"""``n_blocks`` blocks of ``RNVP → mixer → RNVP → mixer`` (paper Fig. 7), then, with ``n_angles`` > 0,
    :class:`~p4lightning.flows.squash.AngleSquash` onto :math:`(-\pi, \pi)` for the last ``n_angles``
    coordinates (torsions on the circle without aliasing).

    Args:
        dim: flow dimension (60 for alanine dipeptide).
        n_blocks: number of blocks (paper: 25).
        hidden: hidden sizes of the ``t`` and ``s`` networks (paper: ``(60, 60)``).
        mixing: ``"swap"`` (RealNVP baseline) or ``"p4inv"`` (P⁴Inv swaps).
        p4inv_kwargs: extra arguments of every :class:`P4Inv` (e.g. ``bookkeeping_dtype``).
        n_angles: trailing coordinates that are angles.
    """
    check_positive_int(n_blocks, "n_blocks")
    check_literal(mixing, RealNVPMixing, "mixing")
    kwargs = {"init": "reverse", "bias": True, **(p4inv_kwargs or {})}
    layers: list[Bijection] = []
    for _ in range(n_blocks):
        for _ in range(2):
            layers.append(RealNVPCoupling(dim, hidden=hidden))
            layers.append(Swap(dim) if mixing == "swap" else P4Inv(dim, **kwargs))
    if n_angles:
        layers.append(AngleSquash(dim, n_angles))
    return SequentialFlow(layers)


def spline_flow(
    dim: int,
    n_circular: int,
    n_couplings: int = 8,
    hidden: Sequence[int] = (256, 256),
    bins: int = 8,
    bound: float = 5.0,
    mixing: SplineMixing = "p4inv",
    activation: str = "relu",
    mask_seed: int = 0,
    p4inv_kwargs: dict[str, Any] | None = None,
) -> SequentialFlow:
    r"""Spline couplings with ``mixing`` layers between them (see the module docstring).

    Args:
        dim: number of coordinates; the last ``n_circular`` are angles in :math:`[-\pi, \pi)`.
        n_circular: number of angle coordinates (may be 0).
        n_couplings: number of couplings (even: each coordinate is transformed ``n_couplings / 2`` times).
        hidden, bins, bound, activation: of every :class:`~p4lightning.flows.spline.SplineCoupling`.
        mixing: ``"p4inv"``, ``"mask"`` or ``"lu"``.
        mask_seed: seed of the random halves (the same for every ``mixing``).
        p4inv_kwargs: extra arguments of every :class:`P4Inv` (e.g. ``bookkeeping_dtype``).
    """
    check_positive_int(n_couplings, "n_couplings", minimum=2)
    if n_couplings % 2:
        raise ValueError(f"n_couplings must be even (couplings come in complementary pairs); got {n_couplings}")
    check_literal(mixing, SplineMixing, "mixing")
    n_euclidean = dim - check_nonnegative_int(n_circular, "n_circular")
    if n_euclidean < 2:
        raise ValueError(f"spline_flow needs at least 2 Euclidean coordinates; got dim={dim}, n_circular={n_circular}")
    circular = list(range(n_euclidean, dim))
    g = torch.Generator().manual_seed(mask_seed)
    layers: list[Bijection] = []
    for pair in range(n_couplings // 2):
        e = torch.randperm(n_euclidean, generator=g).tolist()
        c = (n_euclidean + torch.randperm(n_circular, generator=g)).tolist()
        halves = (e[: n_euclidean // 2] + c[: n_circular // 2], e[n_euclidean // 2 :] + c[n_circular // 2 :])
        for half in halves:
            layers.append(SplineCoupling(dim, sorted(half), circular, hidden, bins, bound, activation))
            last = pair == n_couplings // 2 - 1 and half is halves[1]
            if mixing == "p4inv" and not last:
                kwargs = {"init": "identity", "bias": True, **(p4inv_kwargs or {})}
                layers.append(LeadingBlock(P4Inv(n_euclidean, **kwargs), dim))
            elif mixing == "lu" and not last:
                layers.append(LeadingBlock(LULinear(n_euclidean), dim))
    return SequentialFlow(layers)
