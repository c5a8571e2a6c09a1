"""The portable two-stage training (the GPU machine's path): both stages from the shipped configs, stage 2 started
from stage 1's best checkpoint, each stage timed in run.json; missing inputs named before any work."""

import json

import numpy as np
import openmm
import pytest
import torch

from p4lightning.experiments.train_portable import main
from p4lightning.systems.alanine import alanine_dipeptide


@pytest.fixture
def inputs(tmp_path):
    from p4lightning.data.md_datamodule import load_positions

    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(alanine_dipeptide(600.0).system))
    replicas = "data/ala2_600K_replicas"
    x = load_positions([f"{replicas}/replica_000.dcd"], f"{replicas}/topology.pdb", 22).reshape(-1, 66)
    x = x.astype(np.float32)
    np.save(folder / "frames.npy", x[:256])
    np.save(folder / "val_frames.npy", x[256:512])
    return folder


def test_both_stages_run_from_the_configs_and_are_timed(inputs, tmp_path):
    torch.set_default_dtype(torch.float32)
    run = main(["--ml-config", "configs/bg/spline_p4inv_ml.yaml", "--energy-config", "configs/bg/spline_p4inv.yaml",
                "--inputs", str(inputs), "--device", "cpu", "--eager", "--ml-steps", "2", "--energy-steps", "1",
                "--out", str(tmp_path / "out")])  # fmt: skip
    assert run["stages"]["ml"]["steps"] == 2 and run["stages"]["energy"]["steps"] == 1
    assert (tmp_path / "out" / "ml" / "checkpoints" / "best.ckpt").is_file()  # validated once (1 batch an epoch)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["seconds"] == run["seconds"] > 0
    assert run["stages"]["energy"]["energy_evaluations"] > 1024  # the energy stage evaluated its batch


def test_missing_inputs_are_named_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--ml-config", "configs/bg/spline_p4inv_ml.yaml", "--energy-config", "configs/bg/spline_p4inv.yaml",
              "--inputs", str(tmp_path), "--out", str(tmp_path / "out")])  # fmt: skip
    assert "lacks system.xml, frames.npy, val_frames.npy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
