r"""``LinearFit``: fit a linear map by SGD as a plain linear layer, P⁴Inv, or inverse P⁴Inv (paper Sect. 4.1)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from p4lightning._validation import (
    as_floating_dtype,
    check_features,
    check_literal,
    check_positive,
    check_positive_int,
)
from p4lightning.models.compile_safe import CompileSafeLightningModule
from p4lightning.p4.inv import P4Inv

__all__ = ["LinearFit"]

Mode = Literal["linear", "p4inv", "inverse-p4inv"]
OptimizerName = Literal["sgd", "adam"]


class LinearFit(CompileSafeLightningModule):
    r"""Minimise :math:`J = \mathbb{E}\|\tilde{\mathbf{A}}\mathbf{x} - \mathbf{y}\|^2` (+ the P⁴ penalty) from
    :math:`\tilde{\mathbf{A}} = \mathbf{I}`.

    Args:
        dim: matrix size :math:`n`.
        mode: ``"linear"`` (dense weight, trained directly), ``"p4inv"`` or ``"inverse-p4inv"`` (trained
            through P⁴ updates; add :class:`~p4lightning.P4MergeCallback` to merge).
        lr: learning rate.
        optimizer: ``"sgd"`` (the paper's) or ``"adam"``.
        momentum: SGD momentum.
        penalty_weight: :math:`C_p` of the P⁴Inv penalty (App. A).
        bookkeeping_dtype: dtype of :math:`\mathbf{A}, \mathbf{A}^{-1}, \ln|\det\mathbf{A}|` (``"float64"``;
            default: the parameters').
    """

    def __init__(
        self,
        dim: int,
        mode: Mode = "p4inv",
        lr: float = 1e-2,
        optimizer: OptimizerName = "sgd",
        momentum: float = 0.0,
        penalty_weight: float = 0.0,
        bookkeeping_dtype: Literal["float32", "float64"] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dim = check_positive_int(dim, "dim")
        self.mode = check_literal(mode, Mode, "mode")
        self.optimizer_name = check_literal(optimizer, OptimizerName, "optimizer")
        check_positive(lr, "lr")
        self.layer: nn.Module
        if self.mode == "linear":
            self.layer = nn.Linear(dim, dim, bias=False)
            with torch.no_grad():
                self.layer.weight.copy_(torch.eye(dim))
        else:
            self.layer = P4Inv(
                dim,
                bias=False,
                parametrization="matrix" if self.mode == "p4inv" else "inverse",
                penalty_weight=penalty_weight,
                bookkeeping_dtype=as_floating_dtype(bookkeeping_dtype, "bookkeeping_dtype"),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\tilde{\\mathbf{A}}\\mathbf{x}` for ``x`` of shape ``(*, n)``."""
        return self.layer(x)[0] if isinstance(self.layer, P4Inv) else self.layer(x)

    def effective_matrix(self) -> torch.Tensor:
        r"""The current :math:`\tilde{\mathbf{A}}` as a dense ``(n, n)`` matrix (detached)."""
        if isinstance(self.layer, P4Inv):
            return self.layer.perturbed_matrix()
        return self.layer.weight.detach().clone()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        check_features(x, self.dim, "batch x")
        loss = (self(x) - y).square().sum(-1).mean()
        self.log("train/loss", loss, prog_bar=True)
        if isinstance(self.layer, P4Inv) and self.layer.penalty_weight > 0:
            penalty = self.layer.penalty()
            self.log("train/penalty", penalty)
            return loss + penalty
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
