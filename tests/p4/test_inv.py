"""P⁴Inv: merge invariants, long-run accuracy of the tracked inverse and log-det, refusals, errors."""

import io
import math

import pytest
import torch

from p4lightning import MergeRefusedError, MergeStatus, P4Inv
from p4lightning.p4.inv import initial_matrix
from p4lightning.p4.inversion import hyperpower_step
from p4lightning.p4.schedule import MergeSchedule


def _state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _set_perturbation(layer, u, v):
    with torch.no_grad():
        layer.u.copy_(u)
        layer.v.copy_(v)


@pytest.mark.parametrize("parametrization", ["matrix", "inverse"])
def test_merge_keeps_the_function(parametrization, device):
    """Forward, inverse and merge on ``--device`` (cpu by default): the same function before and after."""
    layer = P4Inv(8, init="reverse", parametrization=parametrization).to(device)
    _set_perturbation(layer, 0.2 * torch.randn(8), torch.randn(8))
    x = torch.randn(16, 8).to(device)
    y, ladj = layer(x)
    assert y.device.type == ladj.device.type == layer.matrix.device.type == device.type
    x_back, ladj_inv = layer.inverse(y)
    assert layer.merge().status is MergeStatus.ACCEPTED
    assert torch.count_nonzero(layer.u) == 0
    y2, ladj2 = layer(x)
    torch.testing.assert_close(y2, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ladj2, ladj, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.inverse(y)[0], x_back, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.inverse(y)[1], ladj_inv, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("parametrization", ["matrix", "inverse"])
def test_thousand_random_merges_keep_inverse_and_log_det(parametrization):
    """After 1,000 accepted random merges at n = 64, A A^-1 = I and the tracked log|det| = slogdet(A)."""
    n = 64
    layer = P4Inv(n, parametrization=parametrization, log_det_bounds=(-50.0, 50.0))
    g = torch.Generator().manual_seed(0)
    accepted = 0
    while accepted < 1000:
        _set_perturbation(layer, torch.randn(n, generator=g) / n, torch.randn(n, generator=g))
        accepted += layer.merge(generator=g).accepted
    a, a_inv = layer.matrix, layer.inverse_matrix
    assert (a @ a_inv - torch.eye(n)).abs().max() < 1e-9
    sign, logabsdet = torch.linalg.slogdet(a)
    assert abs(float(layer.log_abs_det - logabsdet)) < 1e-9
    assert float(layer.det_sign) == float(sign)
    assert int(layer.merges_accepted) == 1000


def test_out_of_bounds_merge_is_refused_bit_identically_and_keeps_perturbation():
    layer = P4Inv(6)
    # G = 1 + v^T u = 1 + 6 * (-0.9975 / 6) = 0.0025 -> ln|G| ≈ -6.0 < -2.5 (log-det bound)
    _set_perturbation(layer, torch.full((6,), -0.1663), torch.ones(6))
    before = _state(layer)
    outcome = layer.merge()
    assert outcome.status is MergeStatus.OUT_OF_BOUNDS and not outcome.accepted
    assert "ln|det A| after merge" in outcome.reason
    after = layer.state_dict()
    for key in ("matrix", "inverse_matrix", "log_abs_det", "det_sign", "u", "v"):
        assert torch.equal(after[key], before[key]), key
    assert int(layer.merges_refused) == 1
    with pytest.raises(MergeRefusedError, match="out_of_bounds"):
        outcome.raise_if_refused()


def test_forced_merge_accepts_ill_conditioned_update():
    layer = P4Inv(6)
    _set_perturbation(layer, torch.full((6,), -0.1663), torch.ones(6))
    outcome = layer.merge(force=True)
    assert outcome.status is MergeStatus.FORCED and outcome.reason
    torch.testing.assert_close(layer.matrix @ layer.inverse_matrix, torch.eye(6), atol=1e-9, rtol=0)
    assert abs(float(layer.log_abs_det) - float(torch.linalg.slogdet(layer.matrix)[1])) < 1e-9


@pytest.mark.parametrize("bad", ["nan_u", "inf_v", "singular"])
def test_forced_non_finite_merge_is_refused_and_state_bit_identical(bad):
    layer = P4Inv(5, init=torch.eye(5) + 0.1 * torch.randn(5, 5))
    u, v = torch.randn(5), torch.randn(5)
    if bad == "nan_u":
        u[2] = math.nan
    elif bad == "inf_v":
        v[0] = math.inf
    else:  # G = 1 + v^T A^-1 u = 0 exactly: u = -A w, v = w / |w|^2 scaled so v^T A^-1 u = -1
        w = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
        u, v = -(layer.matrix @ w), w
    _set_perturbation(layer, u, v)
    before = _state(layer)
    u_id, v_id = id(layer.u), id(layer.v)
    outcome = layer.merge(force=True)
    assert outcome.status is MergeStatus.NON_FINITE
    for key in ("matrix", "inverse_matrix", "log_abs_det", "det_sign"):
        assert torch.equal(layer.state_dict()[key], before[key]), key
    # the perturbation was reset in place: u = 0, v finite, same Parameter objects
    assert id(layer.u) == u_id and id(layer.v) == v_id
    assert torch.count_nonzero(layer.u) == 0 and bool(torch.isfinite(layer.v).all())


def _nearly_singular_update(layer, delta, seed=0):
    """u, v with G = 1 + v^T A^-1 u = delta (up to rounding): a finite but catastrophically ill-conditioned update."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(layer.dim, generator=g)
    x = torch.randn(layer.dim, generator=g)
    x = x * (-(1.0 - delta) / float(v @ x))
    _set_perturbation(layer, layer.matrix @ x, v)


def test_forced_update_that_would_corrupt_the_inverse_is_refused_as_inaccurate():
    init = torch.eye(8) + 0.5 * torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    # without the probe, the forced merge is applied and leaves an inconsistent inverse ...
    unguarded = P4Inv(8, init=init, max_inverse_error=math.inf)
    _nearly_singular_update(unguarded, 1e-14)
    assert unguarded.merge(force=True).status is MergeStatus.FORCED
    assert (unguarded.matrix @ unguarded.inverse_matrix - torch.eye(8)).abs().max() > 1e-2
    # ... with it (the default), the merge is refused and nothing changes, the perturbation stays
    layer = P4Inv(8, init=init)
    _nearly_singular_update(layer, 1e-14)
    before = _state(layer)
    outcome = layer.merge(force=True)
    assert outcome.status is MergeStatus.INACCURATE and "accuracy probe" in outcome.reason
    assert not outcome.perturbation_reset
    for key, value in layer.state_dict().items():
        if key != "merges_refused":
            assert torch.equal(value, before[key]), key


def test_parameters_keep_identity_and_optimizer_keeps_pointing_at_them():
    layer = P4Inv(4)
    ids = [id(p) for p in layer.parameters()]
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(5):
        loss = layer(torch.randn(8, 4))[0].square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.merge(force=True)
    assert [id(p) for p in layer.parameters()] == ids
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], layer.parameters(), strict=True))


def test_state_dict_round_trip_preserves_everything():
    layer = P4Inv(5, init="reverse", bookkeeping_dtype=torch.float64, dtype=torch.float32)
    _set_perturbation(layer, 0.1 * torch.randn(5), torch.randn(5))
    layer.merge()
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    clone = P4Inv(5, bookkeeping_dtype=torch.float64, dtype=torch.float32)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    for key, value in layer.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key
    x = torch.randn(3, 5, dtype=torch.float32)
    assert torch.equal(clone(x)[0], layer(x)[0])


def test_float64_bookkeeping_survives_float_and_to():
    layer = P4Inv(4, bookkeeping_dtype=torch.float64, dtype=torch.float32)
    with torch.no_grad():
        layer.matrix.add_(1e-12)  # a digit float32 cannot hold
    exact = layer.matrix.clone()
    layer.float()
    layer.to(torch.float16)
    layer.to("cpu")
    assert layer.matrix.dtype == torch.float64 and torch.equal(layer.matrix, exact)
    assert layer.u.dtype == torch.float16
    # without bookkeeping dtype, buffers follow the module
    plain = P4Inv(4).float()
    assert plain.matrix.dtype == torch.float32


def test_float32_network_with_float64_bookkeeping_outputs_float32():
    layer = P4Inv(4, bookkeeping_dtype=torch.float64, dtype=torch.float32)
    y, ladj = layer(torch.randn(2, 4, dtype=torch.float32))
    assert y.dtype == torch.float32 and ladj.dtype == torch.float32


def test_train_and_eval_compute_the_same_function_and_never_merge():
    layer = P4Inv(5)
    _set_perturbation(layer, 0.3 * torch.randn(5), torch.randn(5))
    x = torch.randn(4, 5)
    before = _state(layer)
    y_train = layer.train()(x)[0]
    y_eval = layer.eval()(x)[0]
    assert torch.equal(y_train, y_eval)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_penalty_is_zero_inside_and_quadratic_outside():
    layer = P4Inv(3, penalty_weight=0.5)
    assert float(layer.penalty().detach()) == 0.0  # u = 0: ln|G| = 0, ln|det| = 0, inside [-2, 15]
    # ln|G| = ln(1 + v.u) with v.u = e^-3 - 1  -> ln|G| = -3: one violation of 1 in each term
    _set_perturbation(layer, torch.tensor([math.exp(-3.0) - 1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(layer.penalty(), torch.tensor(0.5 * (1.0 + 1.0)))
    layer.penalty().backward()
    assert layer.u.grad is not None and float(layer.u.grad.abs().sum()) > 0
    assert float(P4Inv(3).penalty().detach()) == 0.0


def test_correct_inverse_reduces_residual_and_refreshes_log_det():
    layer = P4Inv(16, init=torch.eye(16) + 0.2 * torch.randn(16, 16))
    with torch.no_grad():
        layer.inverse_matrix.add_(1e-4 * torch.randn(16, 16))
        layer.log_abs_det.add_(0.01)
    eye = torch.eye(16)
    before = torch.linalg.matrix_norm(eye - layer.matrix @ layer.inverse_matrix)  # Frobenius
    reported = layer.correct_inverse(order=4, refresh_log_det=True)
    after = torch.linalg.matrix_norm(eye - layer.matrix @ layer.inverse_matrix, ord=2)
    torch.testing.assert_close(reported, before)
    assert after < 1e-12 < before
    torch.testing.assert_close(layer.log_abs_det, torch.linalg.slogdet(layer.matrix)[1])


def test_inverse_error_probe_sees_a_corrupted_inverse():
    layer = P4Inv(32)
    assert float(layer.inverse_error_probe()) < 1e-14
    with torch.no_grad():
        layer.inverse_matrix.add_(1e-3 * torch.randn(32, 32))
    assert float(layer.inverse_error_probe()) > 1e-5


def test_negative_identity_crossing_det_zero_recovers_inverse():
    """Paper Fig. 4: trained towards -I_101 without penalty, P4Inv crosses det = 0 (N = 1, N_force = 10,
    N_correct = 50) and afterwards holds A^-1 to 1e-5 and the right log-det and sign, in float32."""
    torch.manual_seed(0)
    n = 101
    target = -torch.eye(n, dtype=torch.float32)
    layer = P4Inv(n, bias=False, dtype=torch.float32, penalty_weight=0.0)
    opt = torch.optim.SGD(layer.parameters(), lr=2e-3)
    schedule = MergeSchedule(every_n_steps=1, force_every_n_merges=10, correct_every_n_merges=50, seed=0)
    for step in range(1, 6001):
        x = torch.randn(64, n, dtype=torch.float32)
        loss = (layer(x)[0] - x @ target.T).square().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step(layer, step, opt)
    assert schedule.totals["forced"] > 0  # the crossing needed forced merges
    assert float(layer.det_sign) == -1.0
    a = layer.matrix.double()
    assert (a @ layer.inverse_matrix.double() - torch.eye(n)).abs().max() < 1e-5
    # float32 log-det after ~4,000 float32 additions spanning ln|det| from about -80 back to 0
    assert abs(float(layer.log_abs_det) - float(torch.linalg.slogdet(a)[1])) < 1e-2
    assert (a - target.double()).abs().max() < 0.1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "dim must be an int >= 1; got 0"),
        ({"dim": 3.0}, TypeError, "dim must be an int"),
        ({"dim": 3, "init": torch.eye(4)}, ValueError, r"shape \(3, 3\); got shape \(4, 4\)"),
        ({"dim": 3, "init": torch.ones(3, 2)}, ValueError, r"shape \(3, 3\); got shape \(3, 2\)"),
        ({"dim": 3, "init": torch.ones(3, 3)}, ValueError, "init must be an invertible matrix"),
        ({"dim": 2, "init": torch.tensor([[1.0, math.nan], [0.0, 1.0]])}, ValueError, "init must be finite"),
        ({"dim": 3, "init": torch.eye(3, dtype=torch.long)}, TypeError, "floating-point"),
        (
            {"dim": 3, "init": "random"},
            ValueError,
            r"init must be one of \['identity', 'reverse'\]; got 'random'",
        ),
        ({"dim": 3, "parametrization": "inv"}, ValueError, "parametrization must be one of"),
        ({"dim": 3, "log_det_bounds": (1.0, -1.0)}, ValueError, "low < high"),
        ({"dim": 3, "log_g_bounds": 5.0}, TypeError, "log_g_bounds must be a"),
        ({"dim": 3, "penalty_weight": -1.0}, ValueError, "penalty_weight must be a float >= 0"),
        ({"dim": 3, "bookkeeping_dtype": torch.int32}, TypeError, "bookkeeping_dtype"),
        ({"dim": 3, "max_inverse_error": 0.0}, ValueError, "max_inverse_error must be a float > 0"),
    ],
)
def test_bad_construction_raises_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        P4Inv(**kwargs)


def test_nan_input_raises_naming_the_argument():
    layer = P4Inv(3)
    x = torch.randn(4, 3)
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match="x must be finite; got 1 NaN and 0 infinite"):
        layer(x)
    with pytest.raises(ValueError, match="y must be finite"):
        layer.inverse(x)
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 3, dtype=torch.long))


def test_reverse_init_is_its_own_inverse_with_correct_sign():
    for n in (1, 2, 3, 4, 5, 60):
        layer = P4Inv(n, init="reverse")
        assert torch.equal(layer.matrix, layer.inverse_matrix)
        assert float(layer.det_sign) == float(torch.linalg.det(initial_matrix(n, "reverse")))
        assert float(layer.log_abs_det) == 0.0


@pytest.mark.parametrize("order", [2, 4, 8])
def test_hyperpower_step_raises_the_residual_to_the_power_p(order: int) -> None:
    gen = torch.Generator().manual_seed(order)
    p = torch.eye(12, dtype=torch.float64) + 0.3 * torch.randn(12, 12, generator=gen, dtype=torch.float64)
    q = torch.linalg.inv(p) + 1e-2 * torch.randn(12, 12, generator=gen, dtype=torch.float64)
    eye = torch.eye(12, dtype=torch.float64)
    residual = eye - p @ q
    new_q = hyperpower_step(p, q, order)
    torch.testing.assert_close(
        eye - p @ new_q, torch.linalg.matrix_power(residual, order), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(hyperpower_step(p, q, order, residual=residual), new_q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="power of two"):
        hyperpower_step(p, q, 6)


def test_correct_inverse_leaves_a_far_off_inverse_untouched() -> None:
    """||I - PQ||_F >= 1: the iteration may diverge, so nothing is written (and the norm is reported)."""
    layer = P4Inv(8, init=torch.eye(8) * 2.0)
    with torch.no_grad():
        layer.inverse_matrix.copy_(torch.eye(8))  # residual -I: Frobenius norm sqrt(8)
    before = layer.inverse_matrix.clone()
    reported = layer.correct_inverse()
    assert float(reported) == pytest.approx(8**0.5)
    assert torch.equal(layer.inverse_matrix, before)


def test_explicit_float64_init_keeps_its_precision_under_a_float32_default():
    import torch

    from p4lightning import P4Inv, P4Orth

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        g = torch.Generator().manual_seed(0)
        t = torch.randn(6, 6, generator=g, dtype=torch.float64) + 3 * torch.eye(6, dtype=torch.float64)
        layer = P4Inv(6, init=t)
        assert layer.matrix.dtype == torch.float64 and torch.equal(layer.matrix, t)
        residual = (layer.matrix @ layer.inverse_matrix - torch.eye(6, dtype=torch.float64)).abs().max()
        assert residual < 1e-14
        q, _ = torch.linalg.qr(t)
        orth = P4Orth(6, init=q)
        assert orth.matrix.dtype == torch.float64 and torch.equal(orth.matrix, q)
        assert P4Inv(6, init=t.float()).matrix.dtype == torch.float32  # a float32 init stays float32
    finally:
        torch.set_default_dtype(previous)
