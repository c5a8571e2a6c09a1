"""The linear demo runs end to end (at a tiny size) and writes its figure and results."""

import json

from p4lightning.experiments.linear_demo import main


def test_quick_linear_demo_writes_results(tmp_path):
    results = main(["--quick", "--out", str(tmp_path)])
    assert set(results) == {"positive_definite", "special_orthogonal", "negative_identity"}
    assert (tmp_path / "linear_curves.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "linear_results.json").read_text())
    p4 = saved["positive_definite"]["p4inv N=1"]
    assert p4["loss"][-1] < p4["loss"][0]  # it learns
    assert max(p4["inverse_error"]) < 1e-5  # and its tracked inverse stays accurate


def test_an_unusable_out_is_refused_before_training_and_outputs_are_written_atomically(tmp_path, capsys, monkeypatch):
    import os
    from pathlib import Path

    import pytest
    from matplotlib.figure import Figure

    from p4lightning.experiments import linear_demo, linear_lightning

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the output folder was checked")

    monkeypatch.setattr(linear_demo, "train_linear", no_training)
    monkeypatch.setattr(linear_lightning, "run_config", no_training)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--out", str(tmp_path / "a_file" / "out")])
    assert exit_info.value.code == 2 and "cannot be created" in capsys.readouterr().err
    config = str(Path(__file__).parents[2] / "configs/linear/negid101_linear.yaml")
    with pytest.raises(SystemExit) as exit_info:
        linear_lightning.main([config, "--out", str(tmp_path / "a_file" / "out")])
    assert exit_info.value.code == 2 and "cannot be created" in capsys.readouterr().err

    def full_disk(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    from p4lightning.plots.curves import plot_linear_curves

    with pytest.raises(OSError):
        plot_linear_curves({"p": {"r": {"step": [0, 1], "loss": [1.0, 0.5], "inverse_error": []}}}, tmp_path / "c.png")
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # no half-written figure under its name
