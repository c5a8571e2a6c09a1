"""What the benchmarks share: ratios of interleaved rounds, the shipped MD frames, the report files, the P⁴
training step (``p4.p4inv_step``, ``p4.p4inv_floor``), and the paper-size BG's ML step (``bg.bg_step``)."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).parents[1]
#: Batch of the P⁴ layer step benchmarks.
BATCH = 256


def ratio_summary(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Median and quartiles over rounds of ``a[i] / b[i]`` (two variants timed in the same round)."""
    r = sorted(x / y for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(r, n=4) if len(r) >= 4 else [r[0], statistics.median(r), r[-1]]
    return {"median": statistics.median(r), "q1": q[0], "q3": q[2]}


def format_ratio(r: dict[str, float]) -> str:
    return f"**{r['median']:.3f}** ({r['q1']:.3f}–{r['q3']:.3f})"


def md_positions(pattern: str = "replica_00[0-3].dcd") -> torch.Tensor:
    """Frames ``(F, 66)`` nm of the shipped 600 K replicas matching ``pattern``."""
    from p4lightning.data.md_datamodule import load_positions

    folder = ROOT / "data/ala2_600K_replicas"
    files = sorted(str(p) for p in folder.glob(pattern))
    return torch.from_numpy(load_positions(files, str(folder / "topology.pdb"), 22)).reshape(-1, 66)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def write_report(out: Path, lines: list[str], result: Any) -> str:
    """Write ``out.md`` (the lines) and ``out.json`` (the raw result), print and return the markdown."""
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(text)
    return text


def expression_energy(energy: Any, x: torch.Tensor) -> torch.Tensor:
    """A ``TorchEnergy``'s potential (kJ/mol) ``(B,)`` as the sum of its energy expressions (``terms_kj``), which
    autograd differentiates: the alternative its analytic gradient is benchmarked against."""
    return torch.stack(list(energy.terms_kj(x).values())).sum(0)


def autograd_energy_and_forces(energy: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E, F)`` like ``energy.potential_and_forces(x)``, the forces by autograd through :func:`expression_energy`."""
    x = x.detach().requires_grad_(True)
    e = expression_energy(energy, x)
    (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), -g


# The P⁴ layer step (p4.p4inv_step, p4.p4inv_floor)


class PlainLinear(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x.new_zeros(x.shape[:-1])


def make_step(module: nn.Module, x: torch.Tensor, compiled: bool = False) -> Callable[[], None]:
    """One training step. ``compiled``: forward, log-det and loss as one ``torch.compile``-d function
    (``fullgraph=True``, default backend), its backward from AOTAutograd; ``zero_grad``, ``backward()`` and
    Adam stay eager — the usual way to compile a training step."""
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)

    def objective(x: torch.Tensor) -> torch.Tensor:
        y, ladj = module(x)
        return 0.5 * y.square().sum(-1).mean() - ladj.mean()

    loss_fn = torch.compile(objective, fullgraph=True) if compiled else objective

    def step() -> None:
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def paired_ratio(
    samples: dict[str, list[float]], name: str, extra_s: float = 0.0, reference: str = "nn.Linear"
) -> tuple[float, float, float]:
    """Median and quartiles over rounds of ``(t_name + extra) / t_nn.Linear`` within each round.

    Pairing blocks that ran back to back cancels the host's slow drifts, which move the two medians of a
    whole phase apart by up to ±0.1 in the ratio on this shared machine."""
    per_round = [(t + extra_s) / base for t, base in zip(samples[name], samples[reference], strict=True)]
    q1, med, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else [per_round[0]] * 3
    return med, q1, q3


# The paper-size BG (bg.bg_step)


def make_bg_model(
    mixing: str, compile: bool, data: torch.Tensor, adam_for_loop: bool = False
) -> tuple[object, Callable[[torch.Tensor], None]]:
    """The paper-size BG (25 blocks, hidden [60, 60]) and its eager or compiled ML step as trained
    (``configure_optimizers``: fused Adam); ``adam_for_loop``: Adam's default for-loop
    implementation on the CPU (85 / 102-106 ms eager where fused Adam gives 75-95)."""
    from p4lightning import find_p4_modules
    from p4lightning.models.boltzmann import BoltzmannGenerator

    torch.manual_seed(0)
    model = BoltzmannGenerator(mixing=mixing, n_blocks=25, hidden=[60, 60])
    model.transform.fit_(data.reshape(-1, 22, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if adam_for_loop else model.configure_optimizers()
    density = torch.compile(model.log_density) if compile else model.log_density
    p4 = [m for _, m in find_p4_modules(model)]
    count = [0]
    merge_generator = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor) -> None:
        loss = -density(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        count[0] += 1
        if count[0] % 100 == 0:
            with torch.no_grad():
                for m in p4:
                    m.merge(generator=merge_generator)

    return model, step
