"""Data: target problems, synthetic sets, MD trajectories and their Lightning datamodules."""

from p4lightning.data.linear import (
    LINEAR_TARGETS,
    linear_target,
    negative_identity,
    positive_definite,
    special_orthogonal,
)

__all__ = ["LINEAR_TARGETS", "linear_target", "negative_identity", "positive_definite", "special_orthogonal"]
