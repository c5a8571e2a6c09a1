"""MDTrajectoryDataModule and the MD command: contiguous splits, shapes, lossless float32, every bad input."""

import mdtraj
import numpy as np
import pytest
import torch

from p4lightning.data.md_datamodule import MDTrajectoryDataModule
from p4lightning.simulation import simulate


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    out = tmp_path_factory.mktemp("mdd") / "t.dcd"
    return simulate(out, frames=50, save_every=20, equilibration_steps=100, seed=1, progress=False)


def test_contiguous_split_and_batches(md):
    dm = MDTrajectoryDataModule(
        [str(md.trajectory)], str(md.topology), batch_size=8, val_fraction=0.2, test_fraction=0.2
    )
    assert dm.train is None  # nothing read in __init__
    dm.setup("fit")
    traj = mdtraj.load(str(md.trajectory), top=str(md.topology))
    flat = torch.from_numpy(traj.xyz.reshape(50, 66))
    assert (
        torch.equal(dm.train, flat[:30])
        and torch.equal(dm.val, flat[30:40])
        and torch.equal(dm.test, flat[40:])
    )
    (batch,) = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 66) and batch.dtype == torch.float32


def test_stride(md):
    dm = MDTrajectoryDataModule(
        str(md.trajectory), str(md.topology), stride=5, val_fraction=0.2, test_fraction=0.2
    )
    dm.setup()
    assert len(dm.train) + len(dm.val) + len(dm.test) == 10


def test_dcd_is_float32_lossless(tmp_path):
    xyz = np.random.default_rng(0).normal(size=(3, 22, 3)).astype(np.float32)
    from p4lightning.systems.alanine import alanine_dipeptide

    top = alanine_dipeptide().mdtraj_topology()
    mdtraj.Trajectory(xyz, top).save_dcd(str(tmp_path / "x.dcd"))
    back = mdtraj.load(str(tmp_path / "x.dcd"), top=top).xyz
    assert np.abs(back - xyz).max() < 1e-6  # nm -> Å -> nm in float32, no 0.001 nm rounding as in XTC


def _setup(traj, top, **kw):
    MDTrajectoryDataModule([str(traj)], str(top), **kw).setup()


def test_bad_inputs_raise_naming_the_problem(md, tmp_path):
    with pytest.raises(FileNotFoundError, match="trajectory file not found"):
        _setup(tmp_path / "missing.dcd", md.topology)
    with pytest.raises(FileNotFoundError, match="topology file not found"):
        _setup(md.trajectory, tmp_path / "missing.pdb")
    garbage = tmp_path / "garbage.dcd"
    garbage.write_bytes(b"not a trajectory at all" * 10)
    with pytest.raises(ValueError, match="not readable by mdtraj"):
        _setup(garbage, md.topology)
    with pytest.raises(ValueError, match="has 22 atoms; the system has 23"):
        _setup(md.trajectory, md.topology, n_atoms=23)
    # a topology that does not match the trajectory (3 atoms)
    small = mdtraj.load(str(md.topology)).atom_slice([0, 1, 2])
    small.save_pdb(str(tmp_path / "small.pdb"))
    with pytest.raises(ValueError, match="has 3 atoms; the system has 22|not readable"):
        _setup(md.trajectory, tmp_path / "small.pdb")
    with pytest.raises(ValueError, match="not readable|atoms"):
        _setup(md.trajectory, tmp_path / "small.pdb", n_atoms=None)
    # NaN coordinates
    traj = mdtraj.load(str(md.trajectory), top=str(md.topology))
    traj.xyz[7, 3, 1] = np.nan
    traj.save_dcd(str(tmp_path / "nan.dcd"))
    with pytest.raises(ValueError, match="NaN or infinite coordinates in 1 frames \\(first: frame 7\\)"):
        _setup(tmp_path / "nan.dcd", md.topology)


def test_bad_arguments():
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        MDTrajectoryDataModule(["a.dcd"], "a.pdb", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        MDTrajectoryDataModule(["a.dcd"], "a.pdb", stride=0)
    with pytest.raises(ValueError, match="at least one file"):
        MDTrajectoryDataModule([], "a.pdb")
    with pytest.raises(ValueError, match="out must be a .dcd"):
        simulate("x.xtc")
    # at construction, not in fit
    with pytest.raises(FileNotFoundError, match="trajectory file not found: a.dcd"):
        MDTrajectoryDataModule(["a.dcd"], "a.pdb")


def test_split_by_trajectories_keeps_every_replica_in_one_split(md, tmp_path):
    import shutil

    files = []
    for r in range(10):
        files.append(tmp_path / f"replica_{r:03d}.dcd")
        shutil.copy(md.trajectory, files[-1])
    dm = MDTrajectoryDataModule([str(tmp_path / "replica_*.dcd")], str(md.topology), split="trajectories",
                                val_fraction=0.1, test_fraction=0.2)  # fmt: skip
    dm.setup()
    split = dm.split_files
    assert [len(split[k]) for k in ("train", "val", "test")] == [7, 1, 2]
    assert not (set(split["train"]) & set(split["val"]) or set(split["train"]) & set(split["test"])
                or set(split["val"]) & set(split["test"]))  # fmt: skip
    assert split["test"] == [str(files[8]), str(files[9])]  # the last files, sorted
    n = len(dm.train) // 7
    assert len(dm.val) == n and len(dm.test) == 2 * n
    assert dm.replica_ids["test"].tolist() == [0] * n + [1] * n and len(dm.replica_ids["train"]) == 7 * n
    report = dm.split_report()
    assert report["val"]["frames"] == n and 0.0 <= report["test"]["phi_positive_fraction"] <= 1.0
    with pytest.raises(ValueError, match="too few for a split by whole trajectories"):
        MDTrajectoryDataModule([str(files[0]), str(files[1])], str(md.topology), split="trajectories").setup()
    with pytest.raises(FileNotFoundError, match="matches no file"):
        MDTrajectoryDataModule([str(tmp_path / "nope_*.dcd")], str(md.topology)).setup()


def _dcd_bytes():
    from pathlib import Path

    # 276-byte header, 288 bytes a frame
    return (Path(__file__).parents[2] / "data/ala2_600K.dcd").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "empty"])
def test_truncated_corrupt_or_empty_dcd_is_refused_naming_the_file(tmp_path, damage):
    from pathlib import Path

    from p4lightning.data.md_datamodule import load_positions

    data = bytearray(_dcd_bytes())
    if damage == "truncated":
        data = data[: 276 + 288 * 4999 + 100]  # cut mid-frame
        message = "declares 10000 frames, 4999 could be read"
    elif damage == "overwritten":
        data[1_000_000:1_000_064] = b"\xff" * 64
        message = "truncated or corrupt: its DCD header declares 10000 frames"
    else:
        data = data[:276]
        data[8:12] = (0).to_bytes(4, "little")
        message = "has no frames"
    path = tmp_path / f"{damage}.dcd"
    path.write_bytes(bytes(data))
    top = Path(__file__).parents[2] / "data/ala2.pdb"
    with pytest.raises(ValueError, match=message) as info:
        load_positions([path], top, 22)
    assert str(path) in str(info.value)


def test_loading_trajectories_prints_nothing_from_the_dcd_reader():
    """mdtraj's DCD plugin writes 'dcdplugin) ...' from C to file descriptor 1; the project silences it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("from p4lightning.data.md_datamodule import load_positions\n"
            "x = load_positions(['data/ala2_600K.dcd'], 'data/ala2.pdb', 22, 500)\nprint('frames', len(x))\n")  # fmt: skip
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "frames 20\n"
