"""The MD command: independent replicas with distinct seeds and starts, exit status, refusal to overwrite."""

import json

import mdtraj
import numpy as np
import pytest

from p4lightning.data.md import main, replica_seeds, simulate_replicas


@pytest.fixture(scope="module")
def starts(tmp_path_factory):
    """A 30-frame OpenMM trajectory whose frames start the replicas."""
    out = tmp_path_factory.mktemp("starts") / "starts.dcd"
    assert main(["--out", str(out), "--frames", "30", "--save-every", "20", "--equilibration-steps", "100",
                 "--no-progress"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("engine", ["openmm", "torch"])
def test_replicas_have_distinct_seeds_starts_and_files_and_the_command_exits_0(tmp_path, starts, engine):
    out = tmp_path / engine
    argv = ["--out", str(out), "--replicas", "3", "--frames", "4", "--save-every", "10",
            "--equilibration-steps", "20", "--starts", str(starts), "--engine", engine, "--workers", "2",
            "--seed", "5", "--no-progress"]  # fmt: skip
    if engine == "torch":
        meta = simulate_replicas(out, 3, 4, 10, equilibration_steps=20, seed=5, starts=starts, engine="torch",
                                 workers=2, compile=False, progress=False)  # fmt: skip
    else:
        assert main(argv) == 0
        meta = json.loads((out / "replicas.json").read_text())
    rows = meta["replicas"]
    assert len({r["seed"] for r in rows}) == 3 and [r["seed"] for r in rows] == replica_seeds(5, 3)
    assert [r["start"]["frame"] for r in rows] == [0, 14, 29]  # equal spacing over the starts file
    assert meta["total_frames"] == 12 and meta["engine"] == engine
    trajs = [mdtraj.load(str(out / r["trajectory"]), top=str(out / "topology.pdb")) for r in rows]
    assert all(t.n_frames == 4 for t in trajs)
    assert not np.allclose(trajs[0].xyz, trajs[1].xyz)
    # refuses to overwrite, naming the files; --force overwrites
    assert main(argv) == 2
    if engine == "openmm":
        assert main([*argv, "--force"]) == 0


def test_refusals(tmp_path, capsys):
    target = tmp_path / "one.dcd"
    target.write_bytes(b"user data")
    assert main(["--out", str(target), "--frames", "2", "--no-progress"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and target.read_bytes() == b"user data"
    with pytest.raises(ValueError, match="out must be a folder"):
        simulate_replicas(tmp_path / "x.dcd", 2, 2)
    with pytest.raises(ValueError, match="replicas must be an int >= 1"):
        simulate_replicas(tmp_path / "r", 0, 2)
