r"""TorchEnergy on an accelerator: energy + forces throughput at batch 4,096–65,536, and the BG energy step there.

For each dtype (float32, float64) and batch (``--batches``), on ``--device``: ``potential_and_forces`` (the
analytic gradient) eager, compiled (``torch.compile(dynamic=True)``: one graph per dtype for all batches) and
compiled with CUDA graphs (``mode="reduce-overhead"``), and, in float32, autograd through the energy expressions
compiled (what ``potential()`` does under ``torch.compile``). Each method: 3 warm-up calls, then 5 timed runs of
``--repeats`` consecutive calls between CUDA events; the median run / repeats is the time per call. Before timing,
every method's energies and forces at the first batch size are compared with float64 on the CPU (the CPU float64
path matches OpenMM's Reference platform to ~1e-14: ``torch_energy_accuracy.md``).

With ``--bg-ckpt``: the Boltzmann generator of that checkpoint on the device with TorchEnergy there — sampling
``--bg-batch`` conformations and their reduced energies, and energy-phase training steps (sample, energy, KL,
backward through energy and flow, Adam) — eager, timed the same way; the device's sampled energies are compared
with the CPU's for the same conformations.

``--system-xml`` reads the OpenMM ``System`` from a file written by ``openmm.XmlSerializer`` (for a machine
without openmmtools, with ``--positions-npy``); by default it is ``alanine_dipeptide(600.0).system``.
``--write-system DIR`` writes both files for it (``ala2_600K_system.xml``, ``ala2_positions.npy``) and exits.

Run: ``python -m benchmarks.energy.torch_energy_gpu --bg-ckpt checkpoints/paper_p4inv.ckpt --out docs/benchmarks/torch_energy_gpu``;
on a machine without openmmtools, first ``python -m benchmarks.energy.torch_energy_gpu --write-system .devcarry`` where it
is installed, then ``--system-xml .devcarry/ala2_600K_system.xml --positions-npy .devcarry/ala2_positions.npy``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import autograd_energy_and_forces, write_report
from p4lightning.systems.torch_energy import TorchEnergy


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_time(fn: Callable[[], object], repeats: int, runs: int = 5) -> float:
    """Median over ``runs`` of the mean time (s) of ``repeats`` consecutive calls, between CUDA events (between
    ``perf_counter`` readings without CUDA: a dry run of this script on the CPU)."""
    for _ in range(3):
        fn()
    synchronize()
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / repeats)
        else:
            t = time.perf_counter()
            for _ in range(repeats):
                fn()
            times.append((time.perf_counter() - t) / repeats)
    return statistics.median(times)


def load_system(path: Path | None) -> tuple[object, np.ndarray | None]:
    import openmm

    if path is not None:
        return openmm.XmlSerializer.deserialize(path.read_text()), None
    from p4lightning.systems.alanine import alanine_dipeptide

    ala2 = alanine_dipeptide(600.0)
    return ala2.system, ala2.positions


def throughput(args: argparse.Namespace, system: object, ref_positions: np.ndarray) -> list[dict]:
    device = torch.device(args.device)
    cpu = TorchEnergy(system, 600.0)
    energy = TorchEnergy(system, 600.0).to(device)

    def by_autograd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return autograd_energy_and_forces(energy, x)

    rows = []
    rng = np.random.default_rng(0)
    for dtype in (torch.float32, torch.float64):
        tag = str(dtype).removeprefix("torch.")
        methods: dict[str, Callable] = {
            "eager": energy.potential_and_forces,
            "compiled": torch.compile(energy.potential_and_forces, dynamic=True),
            "compiled, CUDA graphs": torch.compile(energy.potential_and_forces, dynamic=True, mode="reduce-overhead"),
        }
        if dtype == torch.float32:
            methods["compiled, autograd"] = torch.compile(by_autograd, dynamic=True)
        for i, batch in enumerate(args.batches):
            xyz = ref_positions[None] + 0.01 * rng.standard_normal((batch, *ref_positions.shape))
            x = torch.tensor(xyz, dtype=dtype, device=device)
            check = {}
            if i == 0:
                e_ref, f_ref = cpu.potential_and_forces(torch.tensor(xyz))
                f_scale = f_ref.abs().amax(dim=(1, 2), keepdim=True)
            for name, fn in methods.items():
                t = time.perf_counter()
                e, f = fn(x)
                synchronize()
                first_s = time.perf_counter() - t
                if i == 0:
                    check = {
                        "energy_rel": float(((e.double().cpu() - e_ref).abs() / e_ref.abs().clamp_min(1.0)).max()),
                        "force_rel": float(((f.double().cpu() - f_ref).abs() / f_scale).max()),
                    }
                seconds = cuda_time(lambda fn=fn, x=x: fn(x), args.repeats)
                row = {
                    "dtype": tag, "batch": batch, "method": name, "ms": 1e3 * seconds,
                    "conformations_per_s": batch / seconds, "first_call_s": first_s, **check,
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def bg_on_device(args: argparse.Namespace, system: object) -> dict:
    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.energy import regularize_energy

    device = torch.device(args.device)
    torch.set_default_dtype(torch.float32)
    # built from its hyperparameters rather than load_from_checkpoint, whose LightningCLI instantiator needs
    # jsonargparse (absent on the device machines this script was written for)
    ckpt = torch.load(args.bg_ckpt, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    model = BoltzmannGenerator(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    model = model.to(device)
    energy = TorchEnergy(system, model.hparams.temperature).to(device)
    cpu_energy = TorchEnergy(system, model.hparams.temperature)
    g = torch.Generator(device=device).manual_seed(0)
    out: dict = {"batch": args.bg_batch}
    with torch.no_grad():
        x, log_q = model.sample(args.bg_batch, g)
        u = energy(x.reshape(-1, 22, 3).double())
        u_cpu = cpu_energy(x.reshape(-1, 22, 3).double().cpu())
    finite = torch.isfinite(u_cpu)
    out["sample_energy_max_abs_diff_kT"] = float((u.cpu()[finite] - u_cpu[finite]).abs().max())
    out["sample_energy_median_kT"] = float(u_cpu[finite].median())
    out["sample_nonfinite"] = int((~finite).sum())

    def sample_and_energy() -> None:
        with torch.no_grad():
            xs, _ = model.sample(args.bg_batch, g)
            energy(xs.reshape(-1, 22, 3))

    opt = torch.optim.Adam(model.flow.parameters(), lr=1e-6)

    def energy_step() -> None:
        xs, lq = model.sample(args.bg_batch, g)
        us = energy(xs.reshape(-1, 22, 3)).to(xs.dtype)
        loss = (regularize_energy(us)[0] + lq).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out["sample_and_energy_ms"] = 1e3 * cuda_time(sample_and_energy, 5)
    out["energy_phase_step_ms"] = 1e3 * cuda_time(energy_step, 5)
    out["energy_phase_step_finite"] = all(bool(torch.isfinite(p).all()) for p in model.flow.parameters())
    print(json.dumps(out), flush=True)
    return out


def fit_on_device(args: argparse.Namespace, system: object) -> dict:
    """``Trainer.fit`` on one accelerator: the demo's P⁴Inv BG (8 blocks) on the shipped replicas with the
    merge callback, ``energy="torch"``, the energy phase from step ``--fit-steps // 2``, eager and
    ``compile=True``; returns the steps' wall time and whether every parameter and the P⁴ state stayed finite."""
    import pytorch_lightning as pl

    import p4lightning.models.boltzmann as boltzmann
    from p4lightning import P4MergeCallback
    from p4lightning.data.md_datamodule import MDTrajectoryDataModule

    if args.system_xml is not None:  # no openmmtools here: the model's energy is built from the carried System
        from types import SimpleNamespace

        boltzmann.alanine_dipeptide = lambda temperature=600.0: SimpleNamespace(system=system)  # type: ignore
    torch.set_default_dtype(torch.float32)
    out = {}
    for compile_ in (False, True):
        pl.seed_everything(0)
        model = boltzmann.BoltzmannGenerator(
            mixing="p4inv", n_blocks=8, hidden=[60, 60], lr=1e-3, energy_phase_start=args.fit_steps // 2,
            energy_lr=1e-4, energy_weight_ratio=0.2, energy_batch_size=256, energy="torch", compile=compile_,
        )  # fmt: skip
        dm = MDTrajectoryDataModule(
            ["data/ala2_600K_replicas/replica_*.dcd"], "data/ala2_600K_replicas/topology.pdb",
            split="trajectories", batch_size=256, val_fraction=0.1, test_fraction=0.1,
        )  # fmt: skip
        trainer = pl.Trainer(
            accelerator="gpu" if torch.cuda.is_available() else "cpu", devices=1, max_steps=args.fit_steps,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0,
            callbacks=[P4MergeCallback(every_n_steps=10)],
        )  # fmt: skip
        class Watch(pl.Callback):
            """Where each step ran, and the wall time of the last ten ML and ten energy-phase steps."""

            def __init__(self) -> None:
                self.devices: set[str] = set()
                self.stamps: list[float] = []

            def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: object) -> None:
                synchronize()
                self.devices.add(str(pl_module.device))
                self.devices.add(str(pl_module.energy.device))
                self.stamps.append(time.perf_counter())

        watch = Watch()
        trainer.callbacks.append(watch)
        t = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        synchronize()
        tag = "compiled" if compile_ else "eager"
        half, st = args.fit_steps // 2, watch.stamps
        out[tag] = {
            "steps": int(trainer.global_step),
            "wall_s": time.perf_counter() - t,
            "devices (model, energy)": sorted(watch.devices),
            "ML step ms (steps half-10..half)": 1e3 * (st[half - 1] - st[half - 11]) / 10,
            "energy-phase step ms (last 10)": 1e3 * (st[-1] - st[-11]) / 10,
            "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
            "p4_merges": int(sum(int(m.merges_accepted) for m in model._p4_modules)),
        }
        print(json.dumps({tag: out[tag]}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--system-xml", type=Path, default=None)
    parser.add_argument("--positions-npy", type=Path, default=None, help="(N, 3) nm; default: the system's own")
    parser.add_argument("--bg-ckpt", type=Path, default=None)
    parser.add_argument("--bg-batch", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/torch_energy_gpu"))
    parser.add_argument("--write-system", type=Path, default=None, metavar="DIR")
    parser.add_argument("--fit-steps", type=int, default=0, help="also Trainer.fit this many steps on the device")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if args.write_system is not None:
        import openmm

        from p4lightning.systems.alanine import alanine_dipeptide

        ala2 = alanine_dipeptide(600.0)
        args.write_system.mkdir(parents=True, exist_ok=True)
        (args.write_system / "ala2_600K_system.xml").write_text(openmm.XmlSerializer.serialize(ala2.system))
        np.save(args.write_system / "ala2_positions.npy", np.asarray(ala2.positions))
        return
    if not torch.cuda.is_available() and args.device.startswith("cuda"):
        raise SystemExit("torch_energy_gpu.py: no CUDA device; pass --device for another accelerator")
    system, positions = load_system(args.system_xml)
    if args.positions_npy is not None:
        positions = np.load(args.positions_npy)
    if positions is None:
        raise SystemExit("--system-xml needs --positions-npy (the reference conformation to perturb)")
    t0 = time.perf_counter()
    result: dict = {"rows": [] if args.skip_throughput else throughput(args, system, positions)}
    if args.bg_ckpt is not None:
        result["bg"] = bg_on_device(args, system)
    if args.fit_steps:
        result["fit"] = fit_on_device(args, system)
    result["wall_s"] = time.perf_counter() - t0
    result["machine"] = {
        "device": torch.cuda.get_device_name(args.device) if torch.cuda.is_available() else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }  # fmt: skip
    name = result["machine"]["device"]
    lines = [
        f"# TorchEnergy on {name}: energy + forces of alanine dipeptide (OBC1, no constraints)",
        "",
        f"Command: `python -m benchmarks.energy.torch_energy_gpu {' '.join(sys.argv[1:])}` ({result['wall_s'] / 60:.1f} "
        f"min); torch {torch.__version__}, Python {platform.python_version()}.",
    ]
    if result["rows"]:
        lines += [
            "",
            f"Time per call = median of 5 runs of {args.repeats} consecutive calls between CUDA events. `energy_rel` / "
            "`force_rel`: largest difference from float64 on the CPU at the first batch size (energies relative to "
            "max(1, |E|) kJ/mol, forces relative to the conformation's largest |force|).",
            "",
            "| dtype | batch | method | ms per call | conformations/s | first call (s) | energy_rel | force_rel |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dtype']} | {r['batch']} | {r['method']} | {r['ms']:.3f} | {r['conformations_per_s']:.3g} | "
            f"{r['first_call_s']:.1f} | {r.get('energy_rel', float('nan')):.1e} | {r.get('force_rel', float('nan')):.1e} |"
        )
    if "bg" in result:
        b = result["bg"]
        lines += [
            "",
            f"Boltzmann generator `{args.bg_ckpt}` on the device, batch {b['batch']}, eager: sampling + reduced "
            f"energies {b['sample_and_energy_ms']:.1f} ms; energy-phase step (sample, energy, KL, backward, Adam) "
            f"{b['energy_phase_step_ms']:.1f} ms (parameters finite after the steps: {b['energy_phase_step_finite']}); "
            f"sampled energies on the device against the CPU's, float64: max |Δu| {b['sample_energy_max_abs_diff_kT']:.1e}"
            f" k_BT (median u {b['sample_energy_median_kT']:.1f}, non-finite {b['sample_nonfinite']}).",
        ]
    if "fit" in result:
        lines += ["", f"`Trainer.fit` on the device ({args.fit_steps} steps, demo-size P⁴Inv BG, energy phase from step "
                  f"{args.fit_steps // 2}, merges every 10 steps):", ""]
        lines += [f"- {k}: {v}" for k, v in result["fit"].items()]
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
