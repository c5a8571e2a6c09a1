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
