r"""Continue a Boltzmann generator's energy stage on a machine without openmmtools or mdtraj (a GPU machine).

The model comes from a checkpoint, the OpenMM ``System`` from an XML file written by ``openmm.XmlSerializer``
(``--write-inputs`` writes it, with the training frames as ``.npy``, where openmmtools and mdtraj are installed),
and the maximum-likelihood term's frames from that ``.npy``; everything else is the usual ``Trainer.fit`` with
:class:`~p4lightning.P4MergeCallback` (for P⁴Inv mixing) and :class:`~p4lightning.models.BoltzmannGenerator`'s
energy phase from step 0 (reverse KL, the importance-weighted forward KL with ``--iw-weight``, the ML term with
``w_e/w_l = --energy-weight-ratio``, the two highest energies of a batch dropped, lin-log cut at 100 k_BT,
gradient norm clipped at 10), at a constant learning rate for ``--minutes`` of wall time (``max_time``). It writes
the trained weights as a Lightning checkpoint without optimizer state (``--out``/``model.ckpt``: a file the
``p4lightning`` command reads) and ``run.json`` (steps, seconds, step time, device).

Run (where openmmtools is):
``python -m p4lightning.experiments.energy_stage_portable --write-inputs DIR``; then (anywhere):
``python -m p4lightning.experiments.energy_stage_portable --ckpt checkpoints/spline_p4inv.ckpt --inputs DIR
--minutes 6 --device cuda --out OUT``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["FramesDataModule", "main", "write_inputs"]

REPLICAS = "data/ala2_600K_replicas"


class FramesDataModule(pl.LightningDataModule):
    """Training (and validation) frames ``(F, 66)`` nm from arrays: what ``BoltzmannGenerator.setup`` reads
    (``train``: the coordinate transform's fit) and the ML term's batches; ``val`` (optional) for validation."""

    def __init__(self, frames: torch.Tensor, batch_size: int, seed: int, val: torch.Tensor | None = None) -> None:
        super().__init__()
        self.train, self.val, self.batch_size, self.seed = frames, val, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(self.train), batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            raise RuntimeError("FramesDataModule was made without validation frames")
        return DataLoader(TensorDataset(self.val), batch_size=self.batch_size)


def write_inputs(folder: Path, n_frames: int) -> None:
    """``system.xml`` (600 K alanine dipeptide), ``frames.npy`` (``n_frames`` training frames of replicas 0–31, in
    their order; all 64,000 when ``n_frames`` is at least that) and ``val_frames.npy`` (the validation replicas
    32–35, 8,000 frames), float32 nm ``(F, 66)``."""
    import openmm

    from p4lightning.data.md_datamodule import load_positions
    from p4lightning.systems.alanine import alanine_dipeptide

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(alanine_dipeptide(600.0).system))

    def frames(replicas: range) -> np.ndarray:
        files = [f"{REPLICAS}/replica_{i:03d}.dcd" for i in replicas]
        return load_positions(files, f"{REPLICAS}/topology.pdb", 22).reshape(-1, 66).astype(np.float32)

    x = frames(range(32))
    idx = np.random.default_rng(0).choice(len(x), size=min(n_frames, len(x)), replace=False)
    np.save(folder / "frames.npy", x[np.sort(idx)])
    np.save(folder / "val_frames.npy", frames(range(32, 36)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-inputs", type=Path, default=None, help="write system.xml and frames.npy, then exit")
    parser.add_argument("--n-frames", type=int, default=16_000, help="training frames written by --write-inputs")
    parser.add_argument("--ckpt", type=Path, help="the BoltzmannGenerator to continue")
    parser.add_argument("--inputs", type=Path, help="folder with system.xml and frames.npy")
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall time")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--iw-weight", type=float, default=1.0)
    parser.add_argument("--iw-clip-fraction", type=float, default=0.01)
    parser.add_argument("--energy-weight-ratio", type=float, default=1.0)
    parser.add_argument("--energy-batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.write_inputs is not None:
        write_inputs(args.write_inputs, args.n_frames)
        return {}
    if args.ckpt is None or args.inputs is None or args.out is None:
        parser.error("--ckpt, --inputs and --out are needed (or --write-inputs)")
    import openmm

    from p4lightning import P4MergeCallback
    from p4lightning._io import load_checkpoint
    from p4lightning.models.boltzmann import BoltzmannGenerator
    from p4lightning.systems.torch_energy import TorchEnergy

    pl.seed_everything(args.seed)
    ckpt = load_checkpoint(args.ckpt)
    hp = dict(ckpt["hyper_parameters"])
    hp.update(energy_phase_start=0, lr=args.lr, energy_lr=args.lr, lr_schedule="constant", seed=args.seed,
              iw_forward_weight=args.iw_weight, iw_clip_fraction=args.iw_clip_fraction, init_checkpoint=None,
              energy_weight_ratio=args.energy_weight_ratio, energy_batch_size=args.energy_batch_size, compile=False)  # fmt: skip
    hp = {k: v for k, v in hp.items() if not k.startswith("_")}  # LightningCLI's own keys
    model = BoltzmannGenerator(**hp)
    model.load_state_dict(ckpt["state_dict"])
    system = openmm.XmlSerializer.deserialize((args.inputs / "system.xml").read_text())
    energy = TorchEnergy(system, hp["temperature"])
    model.energy = energy  # the model releases it in teardown; its count is read below
    frames = torch.from_numpy(np.load(args.inputs / "frames.npy"))
    has_p4 = hp.get("mixing") == "p4inv"
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_time={"minutes": args.minutes},
        max_steps=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=10.0, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[P4MergeCallback(every_n_steps=100, force_every_n_merges=10, correct_every_n_merges=50)]
        if has_p4 else [],
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=FramesDataModule(frames, 256, args.seed))
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    hp.update(energy_phase_start=None)  # the saved model samples and scores; it is not resumed
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hp, "global_step": trainer.global_step,
                "pytorch-lightning_version": pl.__version__}, args.out / "model.ckpt")  # fmt: skip
    run = {"ckpt": str(args.ckpt), "steps": trainer.global_step, "seconds": seconds,
           "step_s": seconds / max(trainer.global_step, 1), "energy_evaluations": int(energy.num_evaluated),
           "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    (args.out / "run.json").write_text(json.dumps(run, indent=1))
    print(json.dumps(run))
    return run


if __name__ == "__main__":
    main()
