r"""The ``p4lightning`` command.

* ``p4lightning fit|validate|test --config configs/...yaml [--section.key value ...]`` — LightningCLI: every
  ``__init__`` argument of the model, datamodule, trainer and callbacks is an option, ``--help`` is generated
  from their type hints and docstrings, ``--print_config`` shows the resolved config.
* ``p4lightning sample --ckpt RUN.ckpt --n 5000 --out samples/`` — load a Boltzmann-generator checkpoint, draw
  samples with their reduced energies and log importance weights, write them as an mdtraj-readable DCD
  trajectory (+ PDB topology) and ``samples.npz``; with ``--trajectory/--topology`` of reference MD data
  also the evaluation (figures and the metric table).
* ``p4lightning evaluate --ckpt A.ckpt B.ckpt --trajectory 'data/.../replica_03[6-9].dcd' --topology ... --out DIR``
  — score checkpoints against held-out MD with the field's metrics (``p4lightning.metrics``): one JSON table,
  energy violins and Ramachandran histograms.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

__all__ = ["evaluate_main", "main", "sample_main"]


def _quiet() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*enablePackrat.*")


def _ensure_single_openmp_thread() -> None:
    """Re-execute this process with ``OMP_NUM_THREADS=1`` unless the caller chose a thread count.

    torch's OpenMP threads and the OpenMM workers share the cores. Measured (``docs/benchmarks/thread_policy.md``): one
    torch thread is as fast as the default two for the Boltzmann generator's small operations and cannot spin
    against busy workers, while ``OMP_WAIT_POLICY=PASSIVE`` made every step 2× slower (thread wake-ups). OpenMP
    reads the variable when torch loads, which has already happened here, so this needs a fresh process.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "p4lightning.cli", *sys.argv[1:]])


class UsageError(Exception):
    """A user's mistake in a ``p4lightning`` command: printed as one line, exit status 2."""


PROG = "p4lightning"
SUBCOMMANDS = ("fit", "validate", "test", "sample", "evaluate")
USAGE = f"{PROG} [-h] {{{','.join(SUBCOMMANDS)}}} ..."
DESCRIPTION = (
    "Train and score P4 models and Boltzmann generators. Sub-commands: fit, validate, test (LightningCLI, from a "
    "config: 'p4lightning fit --config configs/bg/demo.yaml'); sample and evaluate (a Boltzmann-generator "
    "checkpoint: 'p4lightning sample --help', 'p4lightning evaluate --help')."
)


class _ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with one-line errors: the message and where to find help, not a 50-line usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {_one_line(message)} (options: {prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _one_line(message: str) -> str:
    """jsonargparse's multi-line error as one line. A wrapped error ("Does not validate against any of the Union
    subtypes ... Errors: - <item> - Expected a <class 'NoneType'>") becomes its first real item with the lines
    indented under it ("Problem with given class_path '...': Parser key "mixing": Expected ... Got value: glow",
    or a constructor's own message); otherwise the lines are joined, dumps of the given value left out."""
    raw = [line for line in message.strip().splitlines() if line.strip()]
    for i, line in enumerate(raw):
        text = line.lstrip()
        if text.startswith("- ") and not text.startswith("- Expected a "):
            indent, parts = len(line) - len(text), [text[2:]]
            for nxt in raw[i + 1 :]:
                if len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                parts.append(nxt.strip())
            return " ".join(parts)[:600]
    kept = [line.strip() for line in raw if not line.strip().startswith(("Given value", "Subtypes:", "Errors:"))]
    return " ".join(kept)[:600] if kept else "invalid arguments"


class P4LightningCLI(LightningCLI):
    """``LightningCLI`` as ``p4lightning``: named so in usage, without ``predict`` (no model has a predict step),
    and with configuration and data errors — a bad value, a missing or corrupt file — as one line, exit status 2.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands.pop("predict")
        return commands

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError) as err:  # the constructors' input checks
            _fail(self.subcommand, err)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # the usage names every subcommand, sample and evaluate (handled in main) included
        if parser._subcommands_action is not None:
            parser._subcommands_action.metavar = "{" + ",".join(SUBCOMMANDS) + "}"

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        from p4lightning.callbacks.checkpoint import use_atomic_checkpoints

        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a full disk or a kill never leaves a truncated checkpoint
        return trainer

    def _parse_ckpt_path(self) -> None:
        from p4lightning._io import load_checkpoint
        from p4lightning._validation import InputFileError

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if isinstance(ckpt_path, str) and ckpt_path not in ("last", "best", "hpc", "registry"):
            try:  # a missing or garbage file named in one line, before Lightning reads it (with torch's advice)
                load_checkpoint(ckpt_path)
            except InputFileError as err:
                _fail(subcommand, err)
        super()._parse_ckpt_path()

    def _run_subcommand(self, subcommand: str) -> None:
        from p4lightning._validation import ConfigurationError, InputFileError

        try:
            super()._run_subcommand(subcommand)
        except (InputFileError, FileNotFoundError, ConfigurationError) as err:  # found broken in setup()
            _fail(subcommand, err)


def _fail(subcommand: str | None, err: BaseException) -> None:
    """Print ``err`` (its first line) as the command's one-line error and exit with status 2 (with
    ``P4LIGHTNING_DEBUG=1`` in the environment: re-raise it with its traceback)."""
    if os.environ.get("P4LIGHTNING_DEBUG"):
        raise err
    text = _one_line(str(err)) if str(err).strip() else type(err).__name__
    print(f"{PROG} {subcommand or ''}: error: {text}".replace("  ", " "), file=sys.stderr)
    raise SystemExit(2) from None


def _load_bg(path: Path, energy: str | None = None) -> Any:
    """A ``BoltzmannGenerator`` from checkpoint ``path`` with its energy op built; one-line errors for bad files."""
    from p4lightning.models.boltzmann import BoltzmannGenerator

    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = BoltzmannGenerator.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (KeyError, TypeError) as err:
        raise UsageError(f"checkpoint {path} is not a BoltzmannGenerator checkpoint ({type(err).__name__}: {err})") from err
    except Exception as err:  # torch/pickle/zip errors of truncated or garbage files
        raise UsageError(f"checkpoint {path} is not a readable torch checkpoint (truncated or corrupt?): {err}".split("\n")[0]) from err
    if energy is not None:
        model.hparams.energy = energy
    model.energy = model.make_energy()
    return model.eval()


def _refuse_overwrite(out: Path, names: list[str], force: bool) -> None:
    """Refuse ``--out`` before any work: a file, a folder that cannot be written or created, or one holding any of
    ``names`` without ``force``. Creates nothing: the outputs are written as a unit at the end
    (:func:`~p4lightning._io.staged_folder`)."""
    from p4lightning._io import check_output_dir

    try:
        check_output_dir(out, "--out")
    except ValueError as err:
        raise UsageError(str(err)) from None
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise UsageError(f"--out {out} already holds {', '.join(existing)}; pass --force to overwrite")


def _reference(trajectories: list[str] | None, topology: str | None, what: str) -> torch.Tensor | None:
    """Frames ``(F, 66)`` nm of the trajectories (files or globs), checked against the topology; None without any."""
    loaded = _reference_replicas(trajectories, topology, what)
    return None if loaded is None else loaded[0]


def _reference_replicas(
    trajectories: list[str] | None, topology: str | None, what: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(frames (F, 66) nm, replica id (F,))``: each trajectory file is one replica."""
    from p4lightning.data.md_datamodule import expand_trajectories, load_positions
    from p4lightning.systems.alanine import N_ATOMS

    if not trajectories:
        return None
    if not topology:
        raise UsageError(f"{what} needs --topology")
    from p4lightning.systems.alanine import check_topology

    try:
        files = expand_trajectories(trajectories)
        check_topology(topology, f"topology {topology}")
        parts = [torch.from_numpy(load_positions([f], topology, N_ATOMS)).reshape(-1, 3 * N_ATOMS) for f in files]
        ids = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
        return torch.cat(parts), ids
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err


def _positive(value: int, flag: str) -> int:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1; got {value}")
    return value


SAMPLE_DESCRIPTION = (
    "Draw samples from a Boltzmann-generator checkpoint and write them to --out as one unit: samples.dcd and "
    "topology.pdb (mdtraj-readable), samples.npz (energies_kT, log_q, log_weights), summary.json; with "
    "--trajectory/--topology of held-out MD also the evaluation figures. Nothing is created before the inputs "
    "are checked, and a failed run leaves --out as it was."
)
EVALUATE_DESCRIPTION = (
    "Score checkpoints (or a folder written by 'p4lightning sample') against held-out MD: one table for all "
    "models (metrics.json, table.md) and one set of figures (energy violins: MD, MD + noise, each model; "
    "Ramachandran histograms), each metric with its floor from --floor-trajectory (an independent MD set). "
    "The outputs are written to --out as one unit."
)


def sample_main(argv: list[str]) -> dict[str, object]:
    """``p4lightning sample``: draw samples from a checkpoint; write trajectory, arrays and (with MD) the evaluation."""
    parser = argparse.ArgumentParser(
        prog="p4lightning sample", description=SAMPLE_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="BoltzmannGenerator checkpoint")
    parser.add_argument("--n", type=int, default=5000, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--chunk", type=int, default=2048, help="samples per batch")
    parser.add_argument("--energy", choices=("torch", "openmm"), default=None, help="energy op (default: the model's)")
    parser.add_argument("--trajectory", nargs="*", default=None, help="held-out MD (files or globs) to evaluate against")
    parser.add_argument("--topology", default=None, help="topology (PDB) of the MD trajectories")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    args = parser.parse_args(argv)
    _positive(args.n, "--n")
    _positive(args.chunk, "--chunk")
    if args.trajectory and not args.topology:
        raise UsageError("--trajectory needs --topology")
    names = ["samples.dcd", "topology.pdb", "samples.npz", "summary.json"]
    if args.trajectory:
        names += ["energy_violins.png", "ramachandran.png"]
    _refuse_overwrite(args.out, names, args.force)
    reference = _reference(args.trajectory, args.topology, "--trajectory")
    import mdtraj

    from p4lightning._io import staged_folder
    from p4lightning.metrics.definitions import energy_statistics
    from p4lightning.metrics.draw import draw
    from p4lightning.metrics.evaluation import evaluate_model, write_json
    from p4lightning.systems.alanine import N_ATOMS, alanine_dipeptide

    model = _load_bg(args.ckpt, args.energy)
    # one draw: written to samples.npz / samples.dcd and scored in summary.json
    samples = draw(model, args.n, torch.Generator().manual_seed(args.seed), args.chunk)
    x, log_q, u = samples.x.cpu(), samples.log_q.cpu(), samples.u.cpu()
    ala2 = alanine_dipeptide(model.hparams.temperature)
    traj = mdtraj.Trajectory(x.reshape(-1, N_ATOMS, 3).float().numpy(), ala2.mdtraj_topology())
    threshold = float(model.data_energy_max)
    summary: dict[str, object] = {"n": args.n, "samples": energy_statistics(u, threshold)}
    ev = (
        evaluate_model(model, reference, args.n, seed=args.seed, samples=samples)
        if reference is not None
        else None
    )
    all_names = [*names, "energy_violins.png", "ramachandran.png"]  # a rerun without MD removes the old figures
    with staged_folder(args.out, all_names) as stage:
        traj.save_dcd(str(stage / "samples.dcd"))
        ala2.write_pdb(stage / "topology.pdb")
        np.savez(
            stage / "samples.npz", energies_kT=u.numpy(), log_q=log_q.numpy(), log_weights=(-u - log_q).numpy(),
            low_energy_threshold_kT=threshold, temperature_K=model.hparams.temperature,
        )  # fmt: skip
        if ev is not None:
            from p4lightning.plots.molecules import plot_evaluations

            plot_evaluations({"BG samples": ev}, stage)
            summary = ev.metrics
        write_json(summary, stage / "summary.json")
    print(f"wrote {args.n} samples to {args.out / 'samples.dcd'} (+ topology.pdb, samples.npz, summary.json)")
    return summary


def evaluate_main(argv: list[str]) -> dict[str, dict[str, object]]:
    """``p4lightning evaluate``: score checkpoints (or a ``sample`` folder) against held-out MD → JSON + figures.

    One table for all models (``metrics.json``), one set of figures (energy violins: MD, MD + noise, each model;
    Ramachandran histograms), each metric with its floor from ``--floor-trajectory`` (an independent MD set).
    """
    parser = argparse.ArgumentParser(
        prog="p4lightning evaluate", description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--ckpt", type=Path, nargs="*", default=[], help="BoltzmannGenerator checkpoint(s)")
    parser.add_argument("--name", nargs="*", default=None, help="a label per checkpoint (default: file stems)")
    parser.add_argument("--samples", type=Path, default=None, help="a folder written by 'p4lightning sample'")
    parser.add_argument("--trajectory", nargs="+", required=True, help="held-out MD (files or globs)")
    parser.add_argument("--floor-trajectory", nargs="*", default=None, help="independent MD for the floors")
    parser.add_argument("--topology", required=True, help="topology (PDB) of the MD trajectories")
    parser.add_argument("--n", type=int, default=10_000, help="samples per model")
    parser.add_argument("--noise-nm", type=float, default=0.004, help="Gaussian noise (nm) of the noisy-MD set")
    parser.add_argument("--energy", choices=("torch", "openmm"), default=None, help="energy op (default: the model's)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and of the noise")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    args = parser.parse_args(argv)
    _positive(args.n, "--n")
    if not args.ckpt and args.samples is None:
        raise UsageError("give --ckpt (one or more) or --samples")
    if not args.noise_nm >= 0:
        raise UsageError(f"--noise-nm must be >= 0; got {args.noise_nm}")
    names = args.name or [p.stem for p in args.ckpt]
    if len(names) != len(args.ckpt):
        raise UsageError(f"--name needs one label per --ckpt; got {len(names)} for {len(args.ckpt)}")
    for p in args.ckpt:
        if not p.is_file():
            raise UsageError(f"checkpoint not found: {p}")
    outputs = ["metrics.json", "table.md", "energy_violins.png", "ramachandran.png"]
    _refuse_overwrite(args.out, outputs, args.force)
    reference, replica = _reference_replicas(args.trajectory, args.topology, "--trajectory")  # type: ignore[misc]
    floor = _reference(args.floor_trajectory, args.topology, "--floor-trajectory")
    from p4lightning._io import staged_folder
    from p4lightning.metrics.evaluation import evaluate_model, write_json
    from p4lightning.plots.molecules import plot_evaluations

    sample_folder = _check_sample_folder(args.samples) if args.samples is not None else None
    evaluations = {}
    for name, path in zip(names, args.ckpt, strict=True):
        model = _load_bg(path, args.energy)
        evaluations[name] = evaluate_model(
            model, reference, args.n, args.noise_nm, args.seed, floor_x=floor, md_replica=replica
        )
    if args.samples is not None:
        evaluations[args.samples.name] = _evaluate_sample_folder(args, sample_folder, reference, floor, replica)
    command = "p4lightning evaluate " + " ".join(shlex.quote(a) for a in argv)
    table = {name: {**ev.metrics, "source": str(src), "command": command}
             for (name, ev), src in zip(evaluations.items(), [*args.ckpt, args.samples], strict=False)}  # fmt: skip
    text = _format_table(table)
    with staged_folder(args.out, outputs) as stage:
        plot_evaluations(evaluations, stage, args.noise_nm)
        write_json(table, stage / "metrics.json")
        (stage / "table.md").write_text(f"Command: `{command}`\n\n{text}\n")
    print(text)
    print(f"wrote metrics.json, table.md, energy_violins.png, ramachandran.png to {args.out}")
    return table


def _evaluate_sample_folder(
    args: argparse.Namespace, sample_folder: Any, reference: torch.Tensor, floor: torch.Tensor | None,
    replica: torch.Tensor | None = None,
) -> Any:
    """Score a ``sample`` folder (positions, energies and log q as written) with a TorchEnergy for the MD sets."""
    from p4lightning.metrics.evaluation import Evaluation, score
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.protocol import energies, make_energy

    arrays, x = sample_folder
    temperature = float(arrays["temperature_K"])
    energy = make_energy("torch", alanine_dipeptide(temperature).system, temperature)

    def u(pos: torch.Tensor) -> torch.Tensor:
        return energies(energy, pos.double(), 4096)

    g = torch.Generator().manual_seed(args.seed)
    noisy = reference + args.noise_nm * torch.randn(reference.shape, generator=g)
    ev = Evaluation(
        samples_x=x, samples_u=torch.from_numpy(arrays["energies_kT"]).double(),
        samples_log_q=torch.from_numpy(arrays["log_q"]).double(), md_x=reference, md_u=u(reference),
        md_log_q=None, noisy_u=u(noisy), threshold=float(arrays["low_energy_threshold_kT"]), md_replica=replica,
    )  # fmt: skip
    if floor is not None:
        from p4lightning.metrics.evaluation import floor_subset

        ev.floor_x = floor_subset(floor, len(ev.samples_u), g)
        ev.floor_u = u(ev.floor_x)
    score(ev, temperature, args.noise_nm)
    return ev


def _check_sample_folder(folder: Path) -> tuple[Any, torch.Tensor]:
    """The arrays and positions ``(n, 66)`` nm of a ``sample`` folder, refused (one line) if a file is missing or
    unreadable, or if its trajectory and arrays disagree in length (files of two runs)."""
    for name in ("samples.npz", "samples.dcd", "topology.pdb"):
        if not (folder / name).is_file():
            raise UsageError(f"--samples {folder} has no {name} (write it with 'p4lightning sample')")
    try:
        arrays = dict(np.load(folder / "samples.npz"))
    except Exception as err:  # numpy/zip errors of truncated or garbage files
        raise UsageError(f"--samples {folder}/samples.npz is not readable: {err}".split("\n")[0]) from err
    missing = [k for k in ("energies_kT", "log_q", "temperature_K", "low_energy_threshold_kT") if k not in arrays]
    if missing:
        raise UsageError(f"--samples {folder}/samples.npz lacks {', '.join(missing)} (not written by 'p4lightning sample')")
    x = cast(torch.Tensor, _reference([str(folder / "samples.dcd")], str(folder / "topology.pdb"), "--samples"))
    lengths = {len(x), len(arrays["energies_kT"]), len(arrays["log_q"])}
    if len(lengths) != 1:
        raise UsageError(
            f"--samples {folder}: samples.dcd has {len(x)} frames but samples.npz {len(arrays['energies_kT'])} "
            "energies: the files are of different runs"
        )
    return arrays, x


def _with_interval(value: Any, interval: Any, fmt: str = ".4f") -> str:
    """``value [low, high]``; values below 10⁻³ in scientific notation (an ESS of 1e-5 is not 0.0000)."""

    def g(v: float) -> str:
        return format(v, ".1e") if 0 < abs(v) < 1e-3 else format(v, fmt)

    if value is None:
        return "n/a"
    if not interval:
        return g(value)
    return f"{g(value)} [{g(interval[0])}, {g(interval[1])}]"


def _reweighted_phi(m: dict[str, Any]) -> str:
    rw, md = m.get("phi_positive_reweighted"), m.get("phi_positive_md")
    if rw is None or md is None:
        return "n/a"
    return (
        f"{_with_interval(rw['value'], rw['interval95'])} "
        f"(MD {_with_interval(md['value'], md['interval95'])}, {md['n_replicas']} replicas)"
    )


def _format_table(table: dict[str, dict[str, Any]]) -> str:
    """The headline metrics of each model as a markdown table, with the floor (two MD sets) as the last column."""

    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    floor = next((m["floor"] for m in table.values() if "floor" in m), None)
    rows = [
        ("samples (MD frames)", lambda m: f"{m['n_samples']} ({m['n_md']})", lambda fl: f"{fl['n']}"),
        ("mean shift vs MD (k_BT)", lambda m: f(m["shift_vs_md_kT"]["mean"], ".2f"),
         lambda fl: f(fl["shift_vs_md_kT"]["mean"], ".2f")),
        ("median shift vs MD (k_BT)", lambda m: f(m["shift_vs_md_kT"]["median"], ".2f"),
         lambda fl: f(fl["shift_vs_md_kT"]["median"], ".2f")),
        ("MD + noise: mean shift (k_BT)", lambda m: f(m["noise_shift_vs_md_kT"]["mean"], ".2f"), None),
        ("mean shift / noise mean shift", lambda m: f(m["mean_shift_over_noise_shift"], ".3f"), None),
        ("99th percentile of u (k_BT)", lambda m: f(m["samples"]["p99"], ".1f"), None),
        ("low-energy fraction", lambda m: f(m["samples"]["low_energy_fraction"], ".4f"),
         lambda fl: f(fl["low_energy_fraction"], ".4f")),
        ("reverse ESS, MD's labeling [95 % bootstrap interval]",
         lambda m: _with_interval(m.get("reverse_ess_labeled"), m.get("reverse_ess_labeled_interval95")), None),
        ("samples with another labeling (methyl H order, CA chirality)",
         lambda m: f(m.get("other_labeling_fraction"), ".4f"), None),
        ("reverse ESS, all samples [95 %]", lambda m: _with_interval(m["reverse_ess"], m.get("reverse_ess_interval95")),
         None),
        ("reverse ESS, clipped 1e-4", lambda m: f(m["reverse_ess_clipped"], ".4f"), None),
        ("std of log-weights (nats)", lambda m: f(m.get("log_weight_std"), ".1f"), None),
        ("robust std of log-weights (nats)", lambda m: f(m.get("log_weight_robust_std"), ".2f"), None),
        ("corr(u, ln q) (perfect: −1)", lambda m: f(m.get("corr_u_log_q"), ".3f"), None),
        ("samples with a torsion out of branch", lambda m: f(m.get("out_of_branch_fraction"), ".4f"), None),
        ("reweighted φ ≥ 0 fraction, MD's labeling [95 %] (MD, by replica)",
         lambda m: _reweighted_phi(m), None),
        ("weight share of the top 10 samples", lambda m: f(m.get("top10_weight_share"), ".3f"), None),
        ("forward ESS", lambda m: f(m["forward_ess"], ".2e"), None),
        ("NLL of held-out MD (nats)", lambda m: f(m["nll_md"], ".2f"), None),
        ("Ramachandran KL", lambda m: f(m["ramachandran_kl"], ".3f"), lambda fl: f(fl["ramachandran_kl"], ".3f")),
        ("Ramachandran TV", lambda m: f(m["ramachandran_tv"], ".3f"), lambda fl: f(fl["ramachandran_tv"], ".3f")),
        ("fraction with φ ≥ 0 (MD: held-out set)",
         lambda m: f"{m['phi_positive_fraction']['samples']:.4f} (MD {m['phi_positive_fraction']['md']:.4f})",
         lambda fl: f(fl.get("phi_positive_fraction"), ".4f")),
        ("energy W2 (k_BT)", lambda m: f(m["energy_w2_kT"], ".2f"), lambda fl: f(fl["energy_w2_kT"], ".2f")),
    ]  # fmt: skip
    names = list(table)
    header = ["metric", *names] + (["floor: two MD sets"] if floor is not None else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, get, get_floor in rows:
        cells = [label, *(get(table[n]) for n in names)]
        if floor is not None:
            cells.append(get_floor(floor) if get_floor is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``p4lightning`` console script (``argv=None``) or of an in-process call (tests)."""
    if argv is None:  # the console script: one OpenMP thread first; explicit calls are left as they are
        _ensure_single_openmp_thread()
    args = sys.argv[1:] if argv is None else argv
    _quiet()
    if not args or not (args[0] in SUBCOMMANDS or args[0].startswith("-")):
        choices = f"(choose from {', '.join(SUBCOMMANDS)}; {PROG} --help)"
        if not args:
            print(f"usage: {USAGE}\n{PROG}: error: a subcommand is required {choices}", file=sys.stderr)
        else:
            print(f"{PROG}: error: invalid choice: {args[0]!r} {choices}", file=sys.stderr)
        raise SystemExit(2)
    commands = {"sample": sample_main, "evaluate": evaluate_main}
    if args and args[0] in commands:
        try:
            commands[args[0]](args[1:])
        except UsageError as err:
            print(f"p4lightning {args[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:  # a full disk, a folder removed under us: the outputs are left as they were
            if os.environ.get("P4LIGHTNING_DEBUG"):
                raise
            print(f"p4lightning {args[0]}: error: {err} (--out is left as it was)", file=sys.stderr)
            raise SystemExit(1) from None
        return
    P4LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,  # None: LightningCLI reads sys.argv itself
        save_config_kwargs={"overwrite": True},
        parser_class=_ArgumentParser,
        parser_kwargs={"prog": PROG, "description": DESCRIPTION},
    )


if __name__ == "__main__":
    main()
