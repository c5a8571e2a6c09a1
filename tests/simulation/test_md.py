"""The MD command: independent replicas with distinct seeds and starts, exit status, refusal to overwrite, and
every bad input refused in one line before any output is made or MD runs."""

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from p4lightning.cli.md import main
from p4lightning.simulation import MAX_TIMESTEP_FS, replica_seeds, simulate_replicas, trajectory
from p4lightning.systems.alanine import alanine_dipeptide


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


def _unavailable_platform() -> str:
    import openmm

    have = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    missing = [name for name in ("CUDA", "OpenCL") if name not in have]
    if not missing:
        pytest.skip("CUDA and OpenCL are both registered here")
    return missing[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("p4lightning-md: error: "), err
    return err


def _no_md(*args, **kwargs):
    raise AssertionError("MD started although an input was bad")


@pytest.fixture
def garbage_starts(tmp_path, starts):
    """Not a trajectory, with a good topology beside it: only the starts file itself is bad."""
    path = tmp_path / "garbage.dcd"
    path.write_bytes(b"not a trajectory\n" * 20)
    shutil.copy(starts.with_suffix(".pdb"), path.with_suffix(".pdb"))
    return path


@pytest.mark.parametrize("case", ["platform", "timestep", "starts"])
def test_bad_replica_inputs_are_one_line_before_the_folder_is_made_or_the_exists_check(
    tmp_path, capsys, garbage_starts, case
):
    extra, message = {
        "platform": (["--platform", _unavailable_platform()], "is not usable here"),
        "timestep": (["--timestep-fs", "50"], "timestep_fs must be at most 3 fs: without constraints"),
        "starts": (["--starts", str(garbage_starts)], f"starts file {garbage_starts} is not a DCD file"),
    }[case]
    out = tmp_path / "reps"
    argv = ["--out", str(out), "--replicas", "2", "--frames", "2", "--no-progress", *extra]
    assert main(argv) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()  # no empty folder left behind
    out.mkdir()
    (out / "replica_000.dcd").write_bytes(b"user data")
    assert main(argv) == 2  # the bad input is named, not "already holds ... pass --force"
    assert message in _one_line_error(capsys) and (out / "replica_000.dcd").read_bytes() == b"user data"


@pytest.mark.parametrize("case", ["platform", "timestep", "format"])
def test_bad_single_run_inputs_are_one_line_before_the_exists_check_and_any_md(
    tmp_path, capsys, monkeypatch, case
):
    monkeypatch.setattr(trajectory, "_openmm_frames", _no_md)
    target = tmp_path / ("x.xtc" if case == "format" else "x.dcd")
    target.write_bytes(b"user data")
    extra, message = {
        "platform": (["--platform", _unavailable_platform()], "is not usable here"),
        "timestep": (["--timestep-fs", "50"], "timestep_fs must be at most 3 fs"),
        "format": ([], "out must be a .dcd path"),
    }[case]
    assert main(["--out", str(target), "--frames", "2", "--no-progress", *extra]) == 2
    assert message in _one_line_error(capsys) and target.read_bytes() == b"user data"


def test_an_unusable_output_folder_is_refused_in_one_line_before_any_md(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trajectory, "_openmm_frames", _no_md)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    for argv, message in [
        (["--out", str(blocker / "x.dcd")], f"trajectory folder {blocker} is a file"),
        (
            ["--out", str(tmp_path / "x.dcd"), "--topology", str(blocker / "x.pdb")],
            f"topology folder {blocker}",
        ),
        (
            ["--out", str(blocker / "reps"), "--replicas", "2"],
            f"output folder {blocker / 'reps'} cannot be created",
        ),
    ]:
        assert main([*argv, "--frames", "2", "--no-progress"]) == 2
        assert message in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_read_only_output_folder_is_refused_in_one_line_before_any_md(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trajectory, "_openmm_frames", _no_md)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if (
        os.geteuid() == 0
    ):  # root ignores the mode bits: make creating a file there fail as it would for a user
        mkstemp = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == read_only:
                raise PermissionError(13, "Permission denied", str(dir))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        for argv in (
            ["--out", str(read_only / "x.dcd")],
            ["--out", str(read_only / "reps"), "--replicas", "2"],
        ):
            assert main([*argv, "--frames", "2", "--no-progress"]) == 2
            err = _one_line_error(capsys)
            assert "is not writable" in err and str(read_only) in err
        assert not any(read_only.iterdir())
    finally:
        read_only.chmod(0o755)


def test_the_timestep_limit_is_below_the_stiffest_bonds_verlet_limit():
    """Note [time step without constraints]: Verlet is stable for Δt < 2/ω; ω = sqrt(k/μ) of the stiffest bond."""
    import openmm
    from openmm import unit

    system = alanine_dipeptide(600.0).system
    (bonds,) = [f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce)]
    omegas = []  # 1/ps
    for b in range(bonds.getNumBonds()):
        i, j, _, k = bonds.getBondParameters(b)
        mi, mj = (system.getParticleMass(a).value_in_unit(unit.dalton) for a in (i, j))
        omegas.append(
            math.sqrt(k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2) * (1 / mi + 1 / mj))
        )
    limit_fs = 2 / max(omegas) * 1e3
    assert limit_fs == pytest.approx(3.2, abs=0.05) and MAX_TIMESTEP_FS < limit_fs
