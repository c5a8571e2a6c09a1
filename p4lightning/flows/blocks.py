r"""The normalizing flow of the paper's Boltzmann generators (App. H, Fig. 7).

Each block is ``RNVP → mixer → RNVP → mixer`` on the 60-dimensional flow coordinates, where the mixer is
either a fixed channel :class:`~p4lightning.flows.permutation.Swap` (the RealNVP baseline) or a
:class:`~p4lightning.p4.inv.P4Inv` layer with bias initialised with the reverse permutation
:math:`A_{ij} = \delta_{i, n-1-j}` (the P⁴Inv model). With 25 blocks, :math:`\mathbf{t}` and :math:`\mathbf{s}`
networks of two hidden layers of 60, the RealNVP layers hold 735,000 parameters (the paper reports 735,050)
and the P⁴Inv layers exactly the paper's 9,000 (``u``, ``v``, ``b``: 25 × 2 × 180).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from p4lightning._validation import check_choice, check_positive_int
from p4lightning.bijection import Bijection
from p4lightning.flows.coupling import RealNVPCoupling
from p4lightning.flows.permutation import Swap
from p4lightning.flows.sequential import SequentialFlow
from p4lightning.p4.inv import P4Inv

__all__ = ["realnvp_flow"]


def realnvp_flow(
    dim: int = 60,
    n_blocks: int = 25,
    hidden: Sequence[int] = (60, 60),
    mixing: Literal["swap", "p4inv"] = "p4inv",
    p4inv_kwargs: dict[str, Any] | None = None,
) -> SequentialFlow:
    """``n_blocks`` blocks of ``RNVP → mixer → RNVP → mixer`` (paper Fig. 7).

    Args:
        dim: flow dimension (60 for alanine dipeptide).
        n_blocks: number of blocks (paper: 25).
        hidden: hidden sizes of the ``t`` and ``s`` networks (paper: ``(60, 60)``).
        mixing: ``"swap"`` (RealNVP baseline) or ``"p4inv"`` (P⁴Inv swaps).
        p4inv_kwargs: extra arguments of every :class:`P4Inv` (e.g. ``bookkeeping_dtype``).
    """
    check_positive_int(n_blocks, "n_blocks")
    check_choice(mixing, ("swap", "p4inv"), "mixing")
    kwargs = {"init": "reverse", "bias": True, **(p4inv_kwargs or {})}
    layers: list[Bijection] = []
    for _ in range(n_blocks):
        for _ in range(2):
            layers.append(RealNVPCoupling(dim, hidden=hidden))
            layers.append(Swap(dim) if mixing == "swap" else P4Inv(dim, **kwargs))
    return SequentialFlow(layers)
