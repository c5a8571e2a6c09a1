"""The p4lightning command: every shipped config parses, bad ones are rejected clearly, the main job runs (tiny)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from p4lightning.cli import main
from p4lightning.cli.configs import compose_config

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "model" in printed and "trainer" in printed
    # what LightningCLI read is what compose_config (the experiments' reader) gives: every value the chain sets
    composed = compose_config(config)

    def check(expected, got, where):
        if isinstance(expected, dict):
            for key, value in expected.items():
                check(value, got[key], f"{where}.{key}")
        elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
            assert len(got) == len(expected), where
            for i, (e, g) in enumerate(zip(expected, got, strict=True)):
                check(e, g, f"{where}[{i}]")
        else:
            assert got == expected or str(got) == str(expected), f"{where}: {got!r} != {expected!r}"

    check(composed, printed, config.name)


def test_bad_config_is_rejected_naming_the_option(tmp_path, capsys):
    config = compose_config(ROOT / "configs/bg/demo.yaml")
    config["model"]["init_args"]["mixing"] = "glow"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "mixing" in err and "glow" in err and len(err.splitlines()) == 1  # one line, no usage dump


def test_main_job_config_runs_at_tiny_size_and_sample_reads_its_checkpoint(tmp_path, monkeypatch):
    """The README's main job (configs/bg/demo.yaml) with the sizes shrunk; then `p4lightning sample`."""
    torch.set_default_dtype(torch.float32)
    monkeypatch.chdir(ROOT)  # the config's data paths are relative to the repository root
    config = compose_config(ROOT / "configs/bg/demo.yaml")
    config["model"]["init_args"].update(
        n_blocks=1,
        hidden=[16],
        energy_phase_start=4,
        energy_batch_size=16,
        n_eval_samples=32,
        energy_workers=1,
    )
    config["data"]["init_args"].update(stride=400, batch_size=32)  # 160 training frames: 5 batches an epoch
    config["trainer"].update(
        max_steps=6, check_val_every_n_epoch=1, default_root_dir=str(tmp_path), enable_progress_bar=False
    )
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("P4MergeCallback"):
            cb["init_args"]["every_n_steps"] = 2
        if cb["class_path"].endswith("BoltzmannFigures"):
            cb["init_args"].update(out_dir=str(tmp_path / "figures"), n_samples=64)
        if cb["class_path"].endswith("Checkpoint"):
            cb["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    summary = json.loads((tmp_path / "figures" / "summary.json").read_text())
    for name in ("energy_violins.png", "ramachandran.png", "training_curves.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5_000
    assert summary["low_energy_threshold_kT"] is not None  # not NaN
    for key in ("samples", "shift_vs_md_kT", "noise_shift_vs_md_kT", "reverse_ess", "ramachandran_kl", "nll_md"):
        assert key in summary
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 6
    out = tmp_path / "samples"
    main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "ckpt" / "last.ckpt"),
            "--n",
            "40",
            "--chunk",
            "16",
            "--out",
            str(out),
        ]
    )
    import mdtraj

    traj = mdtraj.load(str(out / "samples.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 40 and traj.n_atoms == 22
    arrays = __import__("numpy").load(out / "samples.npz")
    assert arrays["energies_kT"].shape == arrays["log_weights"].shape == (40,)
    # a second run into the same folder is refused, naming the files, before any sampling
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt", str(tmp_path / "ckpt" / "last.ckpt"), "--n", "8", "--out", str(out)])
    assert exit_info.value.code == 2
    # evaluate: the checkpoint and the sample folder against held-out MD, with the floor from other MD
    table = main_evaluate(tmp_path, out)
    for name in ("last", "samples"):
        metrics = table[name]
        assert metrics["n_samples"] == (64 if name == "last" else 40)
        assert 0 < metrics["reverse_ess"] <= 1 and metrics["ramachandran_kl"] >= 0
        assert metrics["floor"]["n"] == min(metrics["n_samples"], 10_000)  # floor at the samples size
    assert table["last"]["nll_md"] is not None and table["samples"]["nll_md"] is None
    for name in ("metrics.json", "table.md", "energy_violins.png", "ramachandran.png"):
        assert (tmp_path / "eval" / name).is_file()


def main_evaluate(tmp_path, samples):
    from p4lightning.cli import evaluate_main

    return evaluate_main(
        ["--ckpt", str(tmp_path / "ckpt" / "last.ckpt"), "--samples", str(samples), "--n", "64",
         "--trajectory", "data/ala2_600K.dcd", "--topology", "data/ala2.pdb", "--floor-trajectory",
         "data/ala2_600K.dcd", "--out", str(tmp_path / "eval")]
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--ckpt", "missing.ckpt", "--n", "5", "--out", "o"], "checkpoint not found"),
        (["sample", "--ckpt", "README.md", "--n", "0", "--out", "o"], "--n must be >= 1"),
        (["sample", "--ckpt", "README.md", "--chunk", "-3", "--out", "o"], "--chunk must be >= 1"),
        (["sample", "--ckpt", "README.md", "--out", "o", "--trajectory", "x.dcd"], "--trajectory needs --topology"),
        (["sample", "--ckpt", "README.md", "--out", "README.md"], "is a file, not a folder"),
        (["sample", "--ckpt", "README.md", "--out", "{tmp}"], "not a readable torch checkpoint"),
        (["evaluate", "--ckpt", "a.ckpt", "--trajectory", "t.dcd", "--topology", "p.pdb", "--out", "o"], "not found"),
    ],
)
def test_cli_errors_are_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [a.replace("{tmp}", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_console_script_reexecs_with_one_openmp_thread():
    """Without OMP_NUM_THREADS the console script re-executes itself with 1 (it must still work)."""
    import os
    import shutil
    import subprocess
    import sys

    exe = shutil.which("p4lightning") or str(Path(sys.executable).with_name("p4lightning"))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([exe, "sample", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--ckpt" in out.stdout
    # the re-executed process still calls itself p4lightning (not cli.py), lists sample/evaluate, has no predict
    out = subprocess.run([exe, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: p4lightning [")
    assert "sample" in out.stdout and "evaluate" in out.stdout and "predict" not in out.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--bogus", "1"], "p4lightning fit: error: unrecognized arguments: --bogus 1"),
        (["predict"], "invalid choice: 'predict'"),
        (["fit", "--config", "configs/bg/demo.yaml", "--data.init_args.trajectories", "[nothere.dcd]"],
         "p4lightning fit: error: trajectory file not found: nothere.dcd"),
        (["fit", "--config", "configs/bg/demo.yaml", "--model.init_args.lr", "-1"], "lr must be > 0"),
        (["test", "--config", "configs/bg/demo.yaml", "--data.init_args.topology", "data/ala2_600K_replicas/replicas.json"],
         "p4lightning test: error: topology data/ala2_600K_replicas/replicas.json is not readable by mdtraj"),
    ],
)  # fmt: skip
def test_lightning_cli_errors_end_in_one_line_without_usage_dump(argv, message, capsys, monkeypatch):
    """Errors a user causes in fit/validate/test: one message line (Lightning may log 'Seed set' etc. first)."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1], err
    assert "Traceback" not in err and "usage:" not in err and len(err.splitlines()) <= 4


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_outputs_in_a_users_folder_are_refused_without_force(command, tmp_path, capsys, monkeypatch):
    """Files already in --out are named and left untouched, before any model is loaded or sample drawn."""
    monkeypatch.chdir(ROOT)
    name = "samples.dcd" if command == "sample" else "metrics.json"
    (tmp_path / name).write_bytes(b"user data")
    argv = [command, "--ckpt", "README.md", "--out", str(tmp_path)]
    if command == "evaluate":
        argv += ["--trajectory", "x.dcd", "--topology", "y.pdb"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"already holds {name}" in err and "pass --force" in err and len(err.splitlines()) == 1
    assert (tmp_path / name).read_bytes() == b"user data"


# --- reliability: one-line refusals, nothing created or mixed ----------------------------------------------------
SHIPPED = "checkpoints/spline_p4inv.ckpt"


def _one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    last = err.splitlines()[-1]
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    return last


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data.init_args.val_fraction", "0", "--data.init_args.test_fraction", "0"],
         "validation and test splits are empty"),
        (["--model.init_args.temperature", "-1"], "temperature must be > 0; got -1"),
        (["--ckpt_path", "README.md"], "checkpoint README.md is not a readable torch checkpoint"),
        (["--model.init_args.flow", "realnvp", "--model.init_args.mixing", "swap",
          "--model.init_args.circular_torsions", "none"], "P4MergeCallback: BoltzmannGenerator contains no P4Module"),
        (["--ckpt_path", SHIPPED], "checkpointed every_n_steps=100 differs"),
        (["--model.init_args.init_checkpoint", "nothere.ckpt"], "init_checkpoint nothere.ckpt does not exist"),
    ],
)  # fmt: skip
def test_fit_refusals_are_one_line_with_exit_2(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = compose_config(ROOT / "configs/bg/demo.yaml")
    if extra == ["--ckpt_path", SHIPPED]:  # resume the shipped headline with its merge interval changed
        config = compose_config(ROOT / "configs/bg/spline_p4inv.yaml")
        config["model"]["init_args"]["init_checkpoint"] = None
        config["data"]["init_args"]["trajectories"] = ["data/ala2_600K_replicas/replica_00[0-4].dcd"]
        config["trainer"]["callbacks"][0]["init_args"]["every_n_steps"] = 50
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    base = ["fit", "--config", str(path), "--trainer.max_steps", "2", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--model.init_args.compile", "false"]  # fmt: skip
    assert message in _one_line_exit_2(base + extra, capsys)


def test_test_refuses_garbage_checkpoints_and_an_empty_test_split(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["test", "--config", "configs/bg/demo.yaml", "--trainer.logger", "false"]
    assert "not a readable torch checkpoint" in _one_line_exit_2([*base, "--ckpt_path", "README.md"], capsys)
    message = _one_line_exit_2([*base, "--data.init_args.test_fraction", "0", "--ckpt_path", SHIPPED], capsys)
    assert "the test split is empty" in message


def test_usage_lists_every_subcommand(capsys):
    for argv in ([], ["frobnicate"], ["--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        captured = capsys.readouterr()
        assert exit_info.value.code == (0 if argv == ["--help"] else 2)
        if argv == ["--help"]:
            assert captured.out.startswith("usage: p4lightning [") and "{fit,validate,test,sample,evaluate}" in captured.out
        elif argv:
            assert captured.err.strip() == "p4lightning: error: invalid choice: 'frobnicate' (choose from fit, " \
                "validate, test, sample, evaluate; p4lightning --help)"
        else:
            assert "usage: p4lightning [-h] {fit,validate,test,sample,evaluate}" in captured.err


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_help_shows_defaults_in_plain_text(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: 10000)" in out if command == "evaluate" else "(default: 5000)" in out
    assert "``" not in out and ":math:" not in out and ":class:" not in out


def test_a_topology_mdtraj_cannot_parse_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.pdb"
    bad.write_text("ATOM  garbage that is not a PDB record\nCONECT x y\n" * 3)
    for argv in (
        ["evaluate", "--ckpt", SHIPPED, "--trajectory", "data/ala2_600K.dcd", "--topology", str(bad),
         "--out", str(tmp_path / "e")],
        ["sample", "--ckpt", SHIPPED, "--trajectory", "data/ala2_600K.dcd", "--topology", str(bad),
         "--out", str(tmp_path / "s")],
    ):  # fmt: skip
        assert f"topology {bad} is not readable by mdtraj" in _one_line_exit_2(argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pdb"]  # no --out folder left behind


def test_failed_sample_and_evaluate_leave_no_out_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    _one_line_exit_2(["sample", "--ckpt", "README.md", "--out", str(tmp_path / "s")], capsys)
    _one_line_exit_2(["evaluate", "--ckpt", "README.md", "--trajectory", "data/ala2_600K.dcd", "--topology",
                      "data/ala2.pdb", "--out", str(tmp_path / "e")], capsys)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_sample_folder_is_written_as_a_unit_and_evaluate_refuses_a_mixed_one(tmp_path, capsys, monkeypatch):
    import numpy as np

    torch.set_default_dtype(torch.float32)  # as in the console script (restored by the package conftest)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "samples"
    main(["sample", "--ckpt", SHIPPED, "--n", "8", "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = np.savez

    def disk_full_after_the_dcd(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full_after_the_dcd)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt", SHIPPED, "--n", "12", "--out", str(out), "--force"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier run, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]  # no staging folder left
    monkeypatch.setattr(np, "savez", real)
    # a folder mixing two runs (the old code's failure left one): refused, naming the disagreement
    main(["sample", "--ckpt", SHIPPED, "--n", "12", "--out", str(tmp_path / "twelve")])
    (out / "samples.dcd").write_bytes((tmp_path / "twelve" / "samples.dcd").read_bytes())
    message = _one_line_exit_2(
        ["evaluate", "--samples", str(out), "--trajectory", "data/ala2_600K.dcd", "--topology", "data/ala2.pdb",
         "--out", str(tmp_path / "eval")], capsys,
    )  # fmt: skip
    assert "samples.dcd has 12 frames but samples.npz 8 energies" in message


def test_sample_with_md_scores_exactly_the_samples_it_writes(tmp_path, monkeypatch):
    """One draw: summary.json's sample statistics are those of the energies in samples.npz (the old code drew a
    second, different set for the summary)."""
    import numpy as np

    from p4lightning.metrics.definitions import energy_statistics

    torch.set_default_dtype(torch.float32)  # as in the console script (restored by the package conftest)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "s"
    main(["sample", "--ckpt", SHIPPED, "--n", "16", "--out", str(out), "--trajectory",
          "data/ala2_600K_replicas/replica_036.dcd", "--topology", "data/ala2_600K_replicas/topology.pdb"])  # fmt: skip
    arrays = np.load(out / "samples.npz")
    summary = json.loads((out / "summary.json").read_text())
    u = torch.from_numpy(arrays["energies_kT"])
    assert summary["n_samples"] == len(u) == 16
    assert summary["samples"]["median"] == float(u.median())  # nearest rank: the 8th smallest of 16
    assert summary["samples"] == json.loads(json.dumps(energy_statistics(u, float(arrays["low_energy_threshold_kT"]))))
