r"""Regional compilation of a deep :class:`~p4lightning.flows.sequential.SequentialFlow`.

A flow of hundreds of tiny layers (the paper's 2-D flow: 400 layers acting on ``(200, 2)`` batches) spends its
time in dispatch, not arithmetic: eagerly one training step is ~10⁴ operator calls of a few microseconds each.
Compiling the whole stack as one graph unrolls every layer (the 400-layer graph did not finish compiling in
17 minutes). :class:`CompiledRegions` compiles *regions*: contiguous runs of ``size`` layers, each run as a
:class:`SequentialFlow` view through ``torch.compile``. Dynamo inlines ``nn.Module`` calls, so parameters and
buffers are graph inputs and every region of the same structure reuses one compiled graph (one compilation for
100 blocks, not 100). The measured step ratio is ``docs/benchmarks/toy2d_step.md``.

The object holds the layers by reference: it is a :class:`~p4lightning.bijection.Bijection` to call, meant to be
kept *outside* a model's module tree (as :class:`~p4lightning.flows.distribution.FlowDistribution` is), so the
model's ``state_dict`` and the merge callback's module walk see each layer once, under its own name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from p4lightning._validation import check_positive_int
from p4lightning.bijection import Bijection
from p4lightning.flows.sequential import SequentialFlow

__all__ = ["CompiledRegions"]

Step = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class CompiledRegions(Bijection):
    r"""``flow`` run as contiguous regions of ``size`` layers, each region's ``forward`` and ``inverse`` compiled.

    Args:
        flow: the flow :math:`f = f_K \circ \dots \circ f_1`; its layers are used in place (never copied).
        size: layers per region; the last region holds the remaining :math:`K \bmod` ``size`` layers (a second
            compiled graph). ``size >= K`` compiles the flow as one graph.
        fullgraph: refuse graph breaks (``torch.compile(fullgraph=True)``), so a layer that cannot be traced
            fails at the first call instead of running slowly.

    ``forward`` and ``inverse`` agree with ``flow``'s to floating-point reassociation (the compiled kernels may
    fuse and reorder sums); ``ladj`` has shape ``(*)`` as for every bijection.
    """

    def __init__(self, flow: SequentialFlow, size: int, *, fullgraph: bool = True) -> None:
        super().__init__()
        if not isinstance(flow, SequentialFlow):
            raise TypeError(f"flow must be a SequentialFlow; got {type(flow).__name__}")
        self.size = check_positive_int(size, "size")
        self.dim = flow.dim
        layers = list(flow.bijections)
        # plain lists, not ModuleLists: the regions are views of the caller's layers, not new submodules
        regions = [SequentialFlow(layers[i : i + self.size]) for i in range(0, len(layers), self.size)]
        object.__setattr__(self, "_regions", regions)
        object.__setattr__(self, "_forward", [torch.compile(r.forward, fullgraph=fullgraph) for r in regions])
        object.__setattr__(self, "_inverse", [torch.compile(r.inverse, fullgraph=fullgraph) for r in regions])

    @property
    def n_regions(self) -> int:
        """The number of regions, :math:`\\lceil K / \\text{size} \\rceil`."""
        return len(self._regions)

    @staticmethod
    def _chain(steps: list[Step], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(x.shape[:-1])
        for step in steps:
            x, ladj = step(x)
            total = total + ladj
        return x, total

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._chain(self._forward, x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._chain(self._inverse[::-1], y)

    def extra_repr(self) -> str:
        return f"size={self.size}, regions={self.n_regions}"
