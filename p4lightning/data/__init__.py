"""Data: the linear target problems (:mod:`.linear`, :mod:`.linear_datamodule`), the 2-D toy densities
(:mod:`.toy2d`) and MD trajectories split by whole replicas for training (:mod:`.md_datamodule`); the MD itself is
made by :mod:`p4lightning.simulation` (the ``p4lightning-md`` command)."""

from p4lightning.data.linear import (
    LINEAR_TARGETS,
    linear_target,
    negative_identity,
    positive_definite,
    special_orthogonal,
)

__all__ = ["LINEAR_TARGETS", "linear_target", "negative_identity", "positive_definite", "special_orthogonal"]
