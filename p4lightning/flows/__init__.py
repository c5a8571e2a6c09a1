"""Bijections with one interface: ``forward(x) -> (y, ladj)``, ``inverse(y) -> (x, ladj)``."""

from p4lightning.bijection import Bijection, Inverse
from p4lightning.flows.bent import BentIdentity, InverseBentIdentity

__all__ = ["BentIdentity", "Bijection", "Inverse", "InverseBentIdentity"]
