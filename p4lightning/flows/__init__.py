"""Bijections with one interface: ``forward(x) -> (y, ladj)``, ``inverse(y) -> (x, ladj)``."""

from p4lightning.bijection import Bijection, Inverse
from p4lightning.flows.bent import BentIdentity, InverseBentIdentity
from p4lightning.flows.blocks import SPLINE_MIXINGS, realnvp_flow, spline_flow
from p4lightning.flows.coupling import RealNVPCoupling
from p4lightning.flows.distribution import FlowDistribution
from p4lightning.flows.linear import LULinear
from p4lightning.flows.partial import LeadingBlock
from p4lightning.flows.permutation import Permutation, Swap
from p4lightning.flows.priors import NormalUniformPrior
from p4lightning.flows.sequential import SequentialFlow, StandardNormal
from p4lightning.flows.spline import SplineCoupling
from p4lightning.flows.squash import AngleSquash

__all__ = [
    "SPLINE_MIXINGS",
    "AngleSquash",
    "BentIdentity",
    "FlowDistribution",
    "Bijection",
    "Inverse",
    "InverseBentIdentity",
    "LULinear",
    "LeadingBlock",
    "NormalUniformPrior",
    "Permutation",
    "RealNVPCoupling",
    "SequentialFlow",
    "SplineCoupling",
    "StandardNormal",
    "Swap",
    "realnvp_flow",
    "spline_flow",
]
