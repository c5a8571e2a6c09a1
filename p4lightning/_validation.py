"""One validation gate for tensors and options, so every error names the culprit.

Every public entry point of p4lightning checks its arguments through these helpers and raises
:class:`ValueError` or :class:`TypeError` with the argument's name, what was expected and what was given
(never ``assert``, which vanishes under ``python -O``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, get_args

import torch

__all__ = [
    "ConfigurationError",
    "InputFileError",
    "as_floating_dtype",
    "check_choice",
    "check_finite",
    "check_features",
    "check_literal",
    "check_nonnegative_int",
    "check_positive",
    "check_positive_int",
    "check_square_matrix",
]

T = TypeVar("T")


class InputFileError(ValueError):
    """A user's input file (trajectory, topology, checkpoint) is unreadable, corrupt, truncated, empty or of
    another system. A :class:`ValueError`, so callers that catch bad input keep working; the ``p4lightning``
    command prints it as one line."""


class ConfigurationError(ValueError):
    """Settings refused when a run is set up, before any work: a callback that does not fit the model, data or
    strategy, an empty split a stage needs, a resumed checkpoint whose settings differ. A :class:`ValueError`;
    the ``p4lightning`` command prints it as one line (exit status 2)."""


def check_features(x: torch.Tensor, dim: int, name: str = "x") -> None:
    r"""Require ``x`` to be a floating tensor of shape ``(*, dim)``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` has no dimensions or its last dimension is not ``dim``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*, {dim}); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (*, {dim}); got dtype {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (*, {dim}); got shape {tuple(x.shape)}")


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of the floating tensor ``x`` is finite, in one reduction pass.

    ``torch.aminmax`` propagates NaN and keeps ±inf, so both extremes are finite exactly when every entry
    is; unlike ``torch.isfinite(x).all()``, no boolean tensor of ``x``'s size is written.
    """
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Require every entry of ``x`` to be finite (no NaN, no ±inf).

    Inside ``torch.compile`` the check becomes an in-graph assertion (``torch._assert_async``), so a checked
    layer still compiles to one graph: there a non-finite input raises :class:`RuntimeError` with the same
    leading words (without the counts) when the compiled code runs, instead of breaking the graph at a
    host read of the result.

    Raises:
        ValueError: naming how many entries are NaN or infinite.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(torch.isfinite(x).all(), f"{name} must be finite; got NaN or infinite entries")
        return
    if not all_finite(x):
        finite = torch.isfinite(x)
        n_nan = int(torch.isnan(x).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(
            f"{name} must be finite; got {n_nan} NaN and {n_inf} infinite entries "
            f"in a tensor of shape {tuple(x.shape)}"
        )


def check_square_matrix(a: torch.Tensor, dim: int, name: str) -> None:
    """Require ``a`` to be a finite floating ``(dim, dim)`` matrix.

    Raises:
        TypeError: ``a`` is not a floating-point tensor.
        ValueError: wrong shape or non-finite entries.
    """
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({dim}, {dim}); got {type(a).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"{name} must be a floating-point matrix; got dtype {a.dtype}")
    if a.shape != (dim, dim):
        raise ValueError(
            f"{name} must be a square matrix of shape ({dim}, {dim}); got shape {tuple(a.shape)}"
        )
    check_finite(a, name)


def check_positive_int(value: int, name: str, *, minimum: int = 1) -> int:
    """Require ``value`` to be an ``int`` (not ``bool``) no smaller than ``minimum``; return it.

    Raises:
        TypeError: not an integer.
        ValueError: smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return value


def check_nonnegative_int(value: int, name: str) -> int:
    """Require ``value`` to be an ``int`` (not ``bool``) ``>= 0`` (a seed, a count that may be zero); return it."""
    return check_positive_int(value, name, minimum=0)


def check_positive(value: float, name: str) -> float:
    """Require ``value`` to be a real number ``> 0`` (a learning rate, a temperature; NaN fails); return it.

    Raises:
        TypeError: not a real number.
        ValueError: ``<= 0`` or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0; got {value!r} of type {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


def check_literal(value: T, literal: Any, name: str) -> T:
    """Require ``value`` to be one of the values of the ``typing.Literal`` alias ``literal``; return it.

    One constant per choice: a module defines ``Flow = Literal["realnvp", "spline"]`` once, annotates its argument
    with it (what LightningCLI documents and checks) and validates with ``check_literal(flow, Flow, "flow")``, so the
    annotation and the runtime check cannot disagree.
    """
    return check_choice(value, get_args(literal), name)


def check_choice(value: T, choices: Iterable[T], name: str) -> T:
    """Require ``value`` to be one of ``choices``; return it.

    Raises:
        ValueError: naming the accepted choices.
    """
    options = list(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def as_floating_dtype(value: str | torch.dtype | None, name: str = "dtype") -> torch.dtype | None:
    """A floating ``torch.dtype`` from a dtype or its name (``"float64"``, ``"torch.float64"``); ``None`` stays.

    Config files and hyperparameters hold names; modules take dtypes: one option, one name, both spellings.

    Raises:
        ValueError: not a floating dtype or the name of one.
    """
    if value is None or isinstance(value, torch.dtype):
        dtype = value
    else:
        dtype = getattr(torch, str(value).removeprefix("torch."), None)
    if value is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{name} must be a floating dtype such as 'float64' or torch.float64; got {value!r}")
    return dtype
