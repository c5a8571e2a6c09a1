"""Bijections with one interface: ``forward(x) -> (y, ladj)``, ``inverse(y) -> (x, ladj)``."""

from p4lightning.bijection import Bijection, Inverse
from p4lightning.flows.bent import BentIdentity, InverseBentIdentity
from p4lightning.flows.blocks import realnvp_flow
from p4lightning.flows.coupling import RealNVPCoupling
from p4lightning.flows.permutation import Permutation, Swap
from p4lightning.flows.sequential import SequentialFlow, StandardNormal

__all__ = [
    "BentIdentity",
    "Bijection",
    "Inverse",
    "InverseBentIdentity",
    "Permutation",
    "RealNVPCoupling",
    "SequentialFlow",
    "StandardNormal",
    "Swap",
    "realnvp_flow",
]
