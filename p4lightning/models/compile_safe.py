"""A LightningModule base whose logging stays outside ``torch.compile``'s graph.

``trainer.fit(torch.compile(model))`` makes Lightning compile ``training_step`` and friends. With
pytorch-lightning ≤ 2.6.6 on torch ≥ 2.12, a compiled step that calls ``self.log`` dies inside Dynamo
(``InternalTorchDynamoError: 'method' object has no attribute '__dict__'``: ``log`` introspects the step's
signature, which Dynamo now traces; Lightning-AI/pytorch-lightning#21836, pytorch/pytorch#190171). Lightning
fixed it upstream by excluding ``LightningModule.log`` from compilation; this base class applies the same
fix to p4lightning's own modules, so logging graph-breaks and runs eagerly while the math stays compiled.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

__all__ = ["CompileSafeLightningModule"]


class CompileSafeLightningModule(pl.LightningModule):
    """``pl.LightningModule`` with :meth:`log` (and so :meth:`log_dict`) excluded from ``torch.compile``."""

    @torch.compiler.disable
    def log(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102 - Lightning's own docstring applies
        super().log(*args, **kwargs)
