"""The headline metrics of evaluated models as one markdown table, with each metric's floor beside it (the
formatting of :mod:`p4lightning.metrics.evaluation`'s ``metrics.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]


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


def format_table(table: dict[str, dict[str, Any]]) -> str:
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


