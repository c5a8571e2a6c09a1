"""Lightning callbacks: ``P4MergeCallback`` decides *when* to merge; ``p4lightning.p4`` does *what*."""

from p4lightning.callbacks.merge import P4MergeCallback

__all__ = ["P4MergeCallback"]
