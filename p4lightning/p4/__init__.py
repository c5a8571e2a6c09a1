"""Core P⁴ math: the protocol, P⁴Inv, P⁴Orth, sanity bounds, iterative inversion. Plain torch, no Lightning."""

from p4lightning.p4.bounds import LogBounds
from p4lightning.p4.inv import P4Inv
from p4lightning.p4.inversion import hyperpower_step
from p4lightning.p4.orth import P4Orth
from p4lightning.p4.protocol import MergeOutcome, MergeRefusedError, MergeStatus, P4Module, find_p4_modules
from p4lightning.p4.schedule import MergeReport, MergeSchedule

__all__ = [
    "LogBounds",
    "MergeOutcome",
    "MergeRefusedError",
    "MergeReport",
    "MergeSchedule",
    "MergeStatus",
    "P4Inv",
    "P4Module",
    "P4Orth",
    "find_p4_modules",
    "hyperpower_step",
]
