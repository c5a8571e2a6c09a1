r"""Sanity bounds on logarithms of determinants, and the quadratic penalty built from them (paper App. A).

A rank-one update :math:`\mathbf{A} \mapsto \mathbf{A} + \mathbf{u}\mathbf{v}^\top` is ill-conditioned when
:math:`G = 1 + \mathbf{v}^\top \mathbf{A}^{-1} \mathbf{u}` approaches zero. A merge is accepted only if

.. math::
    C^{(0)}_{\min} \le \ln|G| \le C^{(0)}_{\max} \quad\text{and}\quad
    C^{(1)}_{\min} \le \ln|G \det \mathbf{A}| \le C^{(1)}_{\max},

and training can be steered away from that regime by the penalty

.. math::
    g(\mathbf{u}, \mathbf{v}) = C_p \sum_{t \in \{\ln|G|,\ \ln|G\det\mathbf{A}|\}}
        \operatorname{ReLU}^2(t - C_{\max}) + \operatorname{ReLU}^2(C_{\min} - t).

References:
    Krämer, Köhler, Noé, arXiv:2010.07033, Appendix A (defaults: C⁽⁰⁾ = [-6, ∞), C⁽¹⁾ = [-2.5, 15.5],
    penalty interval [-2, 15]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["LogBounds"]


@dataclass(frozen=True)
class LogBounds:
    """A closed interval ``[low, high]`` for a log-determinant; ``high`` may be ``math.inf``.

    Example:
        >>> b = LogBounds(-2.5, 15.5)
        >>> b.contains(0.0), b.contains(-3.0)
        (True, False)
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise TypeError(f"LogBounds.{name} must be a real number; got {value!r}")
        if not self.low < self.high:
            raise ValueError(f"LogBounds needs low < high; got low={self.low}, high={self.high}")

    @classmethod
    def coerce(cls, value: LogBounds | tuple[float, float], name: str) -> LogBounds:
        """Accept a ``LogBounds`` or a ``(low, high)`` pair; raise naming ``name`` otherwise."""
        if isinstance(value, LogBounds):
            return value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            try:
                return cls(float(value[0]), float(value[1]))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name}: {err}") from None
        raise TypeError(f"{name} must be a (low, high) pair of floats; got {value!r}")

    def contains(self, value: float) -> bool:
        """``low <= value <= high`` (``False`` for NaN)."""
        return self.low <= value <= self.high

    def describe_violation(self, value: float, what: str) -> str:
        """A sentence naming ``what`` and the bound it violates (empty if inside)."""
        if self.contains(value):
            return ""
        return f"{what} = {value:.6g} is outside [{self.low:g}, {self.high:g}]"

    def squared_violation(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\operatorname{ReLU}^2(v - \text{high}) + \operatorname{ReLU}^2(\text{low} - v)`, elementwise."""
        upper = torch.relu(value - self.high) if math.isfinite(self.high) else torch.zeros_like(value)
        lower = torch.relu(self.low - value) if math.isfinite(self.low) else torch.zeros_like(value)
        return upper.square() + lower.square()
