"""MergeSchedule: when it merges, forces and corrects; optimizer state reset; state_dict; plain loops."""

import pytest
import torch
from torch import nn

from p4lightning import MergeStatus, P4Inv, P4Orth, find_p4_modules
from p4lightning.p4.schedule import MergeSchedule, reset_optimizer_state


def _model():
    return nn.Sequential(P4Inv(4), nn.Tanh(), P4Orth(4), nn.Linear(4, 4))


def test_find_p4_modules_in_order():
    names = [name for name, _ in find_p4_modules(_model())]
    assert names == ["0", "2"]
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        find_p4_modules("not a model")


def test_merges_exactly_every_n_steps_once_per_step():
    model = _model()
    schedule = MergeSchedule(every_n_steps=3, force_every_n_merges=2, correct_every_n_merges=3)
    reports = {}
    for step in range(1, 19):
        for _ in range(2):  # a second call for the same step must not merge again
            r = schedule.step(model, step)
            if r is not None:
                reports[step] = r
    assert sorted(reports) == [3, 6, 9, 12, 15, 18]
    assert [reports[s].forced for s in sorted(reports)] == [False, True] * 3
    assert [reports[s].corrected for s in sorted(reports)] == [False, False, True] * 2
    assert schedule.rounds == 6 and schedule.corrections == 2
    assert int(model[0].merges_accepted) + int(model[0].merges_refused) == 6


def test_optimizer_state_reset_is_optimizer_agnostic():
    for make in (
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        lambda p: torch.optim.RMSprop(p, lr=1e-2),
    ):
        model = _model()
        opt = make(model.parameters())
        x = torch.randn(8, 4)
        h = x
        for m in model:
            h = m(h)[0] if isinstance(m, (P4Inv, P4Orth)) else m(h)
        h.square().sum().backward()
        opt.step()
        perturbation = [p for _, m in find_p4_modules(model) for p in m.perturbation_parameters()]
        others = [model[0].bias, model[3].weight]
        assert all(p in opt.state and opt.state[p] for p in perturbation + others)
        assert reset_optimizer_state(opt, perturbation) == len(perturbation)
        assert all(p not in opt.state for p in perturbation)
        assert all(p in opt.state for p in others)
        opt.step()  # lazily re-initialises without error


def test_refused_out_of_bounds_keeps_optimizer_state():
    layer = P4Inv(3, log_det_bounds=(-0.1, 0.1))
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    layer(torch.randn(4, 3))[0].sum().backward()
    opt.step()
    with torch.no_grad():
        layer.u.fill_(1.0)
        layer.v.fill_(1.0)  # G = 4, ln|det| = ln 4 > 0.1
    report = MergeSchedule(every_n_steps=1, force_every_n_merges=0).step(layer, 1, opt)
    assert report.count(MergeStatus.OUT_OF_BOUNDS) == 1
    assert layer.u in opt.state and layer.v in opt.state


def test_state_dict_round_trip_continues_identically():
    def run(split):
        torch.manual_seed(0)
        model = _model()
        schedule = MergeSchedule(every_n_steps=2, force_every_n_merges=3, correct_every_n_merges=4, seed=7)
        for step in range(1, 21):
            with torch.no_grad():
                for _, m in find_p4_modules(model):
                    for p in m.perturbation_parameters():
                        p.add_(0.05 * torch.randn_like(p))
            if step == split:
                state = schedule.state_dict()
                schedule = MergeSchedule(
                    every_n_steps=2, force_every_n_merges=3, correct_every_n_merges=4, seed=99
                )
                schedule.load_state_dict(state)
            schedule.step(model, step)
        return model.state_dict(), schedule.state_dict()

    (m1, s1), (m2, s2) = run(split=-1), run(split=11)
    for k in m1:
        assert torch.equal(m1[k], m2[k]), k
    assert s1["rounds"] == s2["rounds"] and s1["totals"] == s2["totals"]
    assert torch.equal(s1["generator_state"], s2["generator_state"])


def test_mismatched_settings_on_load_and_bad_args_raise():
    state = MergeSchedule(every_n_steps=5).state_dict()
    with pytest.raises(ValueError, match="every_n_steps=5 differs"):
        MergeSchedule(every_n_steps=10).load_state_dict(state)
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1; got 0"):
        MergeSchedule(every_n_steps=0)
    with pytest.raises(ValueError, match="contains no P4Module"):
        MergeSchedule(every_n_steps=1).step(nn.Linear(2, 2), 1)


def test_pickle_round_trip_keeps_generator_state():
    import pickle

    schedule = MergeSchedule(every_n_steps=2, seed=11)
    torch.randn(3, generator=schedule.generator)
    clone = pickle.loads(pickle.dumps(schedule))
    assert torch.equal(
        torch.randn(4, generator=clone.generator), torch.randn(4, generator=schedule.generator)
    )


# --- what a merge does to the optimizer state -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("policy", "kept"), [("redrawn", {"u"}), ("all", set()), ("none", {"u", "v"})]
)
def test_optimizer_state_policy_after_a_merge(policy, kept):
    """Adam's moments of u and v after an accepted merge: 'redrawn' drops v's (re-drawn from noise) and keeps u's,
    'all' drops both, 'none' keeps both; the bias is never touched."""
    layer = P4Inv(4)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(8, 4))[0].square().sum().backward()
        opt.step()
    before = {name: opt.state[getattr(layer, name)]["exp_avg"].clone() for name in ("u", "v", "bias")}
    schedule = MergeSchedule(every_n_steps=1, force_every_n_merges=1, reset_optimizer_state=policy)
    report = schedule.step(layer, 1, opt)
    assert report.outcomes[""].accepted
    for name in ("u", "v"):
        param = getattr(layer, name)
        assert (param in opt.state) == (name in kept), name
        if name in kept:
            torch.testing.assert_close(opt.state[param]["exp_avg"], before[name])
    torch.testing.assert_close(opt.state[layer.bias]["exp_avg"], before["bias"])
    opt.step()  # a dropped state re-initialises lazily


def test_optimizer_state_policy_is_in_the_state_dict_and_checked_on_load():
    a = MergeSchedule(reset_optimizer_state="all")
    state = a.state_dict()
    assert state["reset_optimizer_state"] == "all"
    MergeSchedule(reset_optimizer_state="all").load_state_dict(state)
    with pytest.raises(ValueError, match="reset_optimizer_state='all' differs"):
        MergeSchedule().load_state_dict(state)
    legacy = {k: v for k, v in state.items() if k != "reset_optimizer_state"}  # saved before the option
    MergeSchedule().load_state_dict(legacy)
    with pytest.raises(ValueError, match="reset_optimizer_state"):
        MergeSchedule(reset_optimizer_state="v")
