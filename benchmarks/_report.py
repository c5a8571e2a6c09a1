"""What every benchmark here shares: ratios of interleaved rounds, the shipped MD frames, the report files."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).parents[1]


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
