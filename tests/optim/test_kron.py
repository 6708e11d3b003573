"""Kronecker-factor machinery: captured statistics against dense float64 definitions,
damping helpers and the double-damping guarantees."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind
from asr_hf.optim.kron import CaptureSpec, KronCapture, find_layers
from asr_hf.optim.kron_factors import (
    LMDamping,
    PairTest,
    damped_inverse,
    double_damping,
    pair_accepted,
    pi_split,
    warmup_decay,
)
from asr_hf.optim.momentum import ema_

D = torch.float64

ALL = CaptureSpec(input_mean=True, input_cov=True, output_mean=True, grad_mean=True, grad_cov=True)


def _mlp(seed: int = 0, inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3, bias=False), nn.ReLU(inplace=inplace), nn.Linear(3, 6)
    ).to(D)


def _dense_reference(model: nn.Sequential, x: torch.Tensor, t: torch.Tensor, mean: bool = True):
    """Per-layer abar, h and per-row g = d l_i / d h_i by an explicit forward/backward."""
    acts, outs = [], []
    z = x
    for mod in model:
        if isinstance(mod, nn.Linear):
            acts.append(z.detach())
            z = F.linear(z, mod.weight, mod.bias)
            z.retain_grad()
            outs.append(z)
        elif isinstance(mod, nn.ReLU):
            z = F.relu(z)
        else:
            z = mod(z)
    per_row = F.cross_entropy(z, t, reduction="none")
    (per_row.mean() if mean else per_row.sum()).backward()
    n = x.shape[0]
    res = []
    for mod, a, h in zip([m for m in model if isinstance(m, nn.Linear)], acts, outs):
        abar = torch.cat([a, torch.ones(n, 1, dtype=D)], 1) if mod.bias is not None else a
        g = h.grad * (n if mean else 1)
        res.append((abar, h.detach(), g))
    return res


def _closure(model, x, t, mean=True):
    def closure():
        model.zero_grad()
        per_row = F.cross_entropy(model(x), t, reduction="none")
        loss = per_row.mean() if mean else per_row.sum()
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("mean", [True, False])
def test_captured_statistics_equal_dense_definitions(mean):
    model = _mlp()
    x = torch.randn(7, 4, dtype=D)
    t = torch.randint(0, 6, (7,))
    layers = find_layers(model)
    assert [layer.name for layer in layers] == ["0", "2", "4"]
    cap = KronCapture(model, layers, batch_averaged=mean)
    with cap.capturing(ALL) as c:
        _closure(model, x, t, mean)()
    ref = _dense_reference(_mlp(), x, t, mean)
    for layer, (abar, h, g) in zip(layers, ref):
        st = c.stats[layer.name]
        assert st.rows == 7
        torch.testing.assert_close(st.mean("a_sum"), abar.mean(0))
        torch.testing.assert_close(st.mean("aa_sum"), abar.T @ abar / 7)
        torch.testing.assert_close(st.mean("h_sum"), h.mean(0))
        torch.testing.assert_close(st.mean("g_sum"), g.mean(0))
        torch.testing.assert_close(st.mean("gg_sum"), g.T @ g / 7)
        # The gradient matrix is (1/N) sum_i g_i abar_i^T for a mean loss.
        expected = g.T @ abar / (7 if mean else 1)
        torch.testing.assert_close(layer.grad_matrix(), expected)
    # Outside a capture block nothing is recorded and hooks are inert.
    _closure(model, x, t, mean)()
    assert cap._stats == {}
    cap.remove()


def test_inplace_activation_and_sequence_rows():
    x = torch.randn(3, 4, 4, dtype=D)  # (batch, time, features): 12 rows
    t = torch.randint(0, 6, (3, 4))

    def run(model):
        layers = find_layers(model)
        cap = KronCapture(model, layers)
        with cap.capturing(ALL) as c:
            model.zero_grad()
            F.cross_entropy(model(x).reshape(-1, 6), t.reshape(-1)).backward()
        return c.stats

    plain, inplace = run(_mlp(3)), run(_mlp(3, inplace=True))
    for name in plain:
        assert plain[name].rows == 12
        for key in ("aa_sum", "h_sum", "g_sum", "gg_sum"):
            torch.testing.assert_close(getattr(inplace[name], key), getattr(plain[name], key))


def test_skip_patterns_and_layer_shapes():
    model = _mlp()
    assert [layer.name for layer in find_layers(model, skip_layers=[r"^2$"])] == ["0", "4"]
    assert find_layers(model, skip_layers=["Linear"]) == []
    model[0].weight.requires_grad_(False)
    layers = find_layers(model)
    assert [layer.name for layer in layers] == ["2", "4"]
    assert (layers[0].d_a, layers[1].d_a) == (5, 4)  # no bias / bias
    delta = torch.randn(6, 4, dtype=D)
    before = layers[1].param_matrix()
    layers[1].add_(delta, alpha=-0.5)
    torch.testing.assert_close(layers[1].param_matrix(), before - 0.5 * delta)


def test_damped_inverse_and_pi_split():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 8, generator=g, dtype=D)
    a = m @ m.T / 8
    torch.testing.assert_close(damped_inverse(a, 0.3), torch.linalg.inv(a + 0.3 * torch.eye(5, dtype=D)))
    # Indefinite input (round-off): eigenvalues clamped at 0 before damping.
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D))
    evals = torch.tensor([-1.0, 0.5, 1.0, 2.0], dtype=D)
    bad = q @ torch.diag(evals) @ q.T
    expected = q @ torch.diag(1.0 / (evals.clamp_min(0) + 0.1)) @ q.T
    torch.testing.assert_close(damped_inverse(bad, 0.1), expected)
    gmat = 3.0 * torch.eye(3, dtype=D)
    da, dg = pi_split(a, gmat, 0.25)
    pi = math.sqrt((torch.trace(a).item() / 5) / 3.0)
    assert da == pytest.approx(pi * 0.5) and dg == pytest.approx(0.5 / pi)
    assert da * dg == pytest.approx(0.25)


def test_moving_average_helpers():
    avg = torch.ones(3, dtype=D)
    ema_(avg, torch.full((3,), 3.0, dtype=D), 0.9)
    torch.testing.assert_close(avg, torch.full((3,), 1.2, dtype=D))
    assert [warmup_decay(k, 0.9) for k in range(4)] == [0.0, 0.5, pytest.approx(2 / 3), 0.75]
    assert warmup_decay(100, 0.9) == 0.9


def _random_spd(n, g, cond=50.0):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    evals = torch.logspace(0, math.log10(cond), n, dtype=D) * torch.rand(1, generator=g, dtype=D).add(0.1)
    return q @ torch.diag(evals) @ q.T


@pytest.mark.parametrize("lm", list(LMDamping))
def test_double_damping_guarantees(lm):
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = 0.2, 0.5
    n = 6
    n_powell = 0
    for trial in range(200):
        h = _random_spd(n, g)
        s = torch.randn(n, generator=g, dtype=D)
        # Mix of positive, tiny and negative curvature pairs.
        y = torch.randn(n, generator=g, dtype=D) * (trial % 3) + (1 - trial % 4) * s
        pair = double_damping(s, y, lambda v: h @ v, mu1, mu2, lm)
        st, yt = pair.s, pair.y
        yhy = float(y @ h @ y)
        # Powell on H: s~.y >= mu1 y.H.y, with equality when it acts; s unchanged otherwise.
        assert float(st @ y) >= mu1 * yhy * (1 - 1e-10) - 1e-12
        if bool(pair.powell):
            n_powell += 1
            assert float(st @ y) == pytest.approx(mu1 * yhy, rel=1e-9)
        else:
            torch.testing.assert_close(st, s)
        # LM: curvature condition with margin, s~.y~ >= mu2 |s~|^2 > 0.
        sty, sts = float(st @ yt), float(st @ st)
        assert sty > 0 and sty >= mu2 * sts * (1 - 1e-10)
        if lm is LMDamping.ADDITIVE:
            torch.testing.assert_close(yt, y + mu2 * st)
        elif bool(pair.lm):
            assert sty == pytest.approx(mu2 * sts, rel=1e-9)
        else:
            torch.testing.assert_close(yt, y)
        # The promised bounds on one BFGS update (H ~ B^{-1}, both SPD).
        lmin_h = torch.linalg.eigvalsh(h)[0].item()
        lmax_h = torch.linalg.eigvalsh(h)[-1].item()
        ratio = float(yt @ yt) / sty
        lm_term = 2 * mu2 if lm is LMDamping.ADDITIVE else 2 / mu2
        assert ratio <= 2 / (mu1 * lmin_h) + lm_term + 1e-9
        b = torch.linalg.inv(h)
        rho = 1 / sty
        b_new = b - torch.outer(b @ st, b @ st) / float(st @ b @ st) + rho * torch.outer(yt, yt)
        v = torch.eye(n, dtype=D) - rho * torch.outer(st, yt)
        h_new = v @ h @ v.T + rho * torch.outer(st, st)
        torch.testing.assert_close(h_new @ b_new, torch.eye(n, dtype=D))  # consistent pair
        ev_b = torch.linalg.eigvalsh(b_new)
        ev_h = torch.linalg.eigvalsh(h_new)
        assert ev_b[0] > 0 and ev_h[0] > 0
        assert ev_b[-1] <= torch.linalg.eigvalsh(b)[-1] + ratio + 1e-8
        assert ev_h[-1] <= lmax_h * (1 + math.sqrt(ratio / mu2)) ** 2 + 1 / mu2 + 1e-8
    assert n_powell > 20  # the test exercised the Powell branch


def _authors_double_damping(s, y, hmat, mu1, mu2):
    """Reference for the authors' double damping (Goldfarb, Ren & Bahamou 2020), float64
    scalars, written from their formulas: Powell on H when s.y / y.H.y <= mu1, then
    "modified" (LM) damping when s~.y / s~.s~ <= mu2, which mixes y toward s~."""
    hy = hmat @ y
    yhy, sy = float(y @ hy), float(s @ y)
    if sy / yhy <= mu1:
        th = (1 - mu1) * yhy / (yhy - sy)
        s = th * s + (1 - th) * hy
    ss, sy = float(s @ s), float(s @ y)
    if sy / ss <= mu2:
        t = (1 - mu2) * ss / (ss - sy)
        y = t * y + (1 - t) * s
    return s, y


def test_default_lm_damping_is_the_authors_rule():
    """Default: a well-conditioned pair keeps its y; a poorly conditioned one gets the
    authors' mixed y (not y + mu2 s)."""
    from asr_hf.optim.kbfgs import KBFGS, KBFGSL

    mu1, mu2 = 0.2, math.sqrt(0.3)
    h = torch.diag(torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=D))
    s = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=D)
    # Well conditioned: y = B s with B = 2 I, s.y / s.s = 2 > mu2, and s.y >= mu1 y.H.y.
    y_good = 2.0 * s
    assert float(s @ y_good) >= mu1 * float(y_good @ h @ y_good)
    pair = double_damping(s, y_good, lambda v: h @ v, mu1, mu2)
    assert not bool(pair.powell) and not bool(pair.lm)
    assert torch.equal(pair.s, s) and torch.equal(pair.y, y_good)
    # Poorly conditioned: tiny curvature along s (Powell leaves s, LM mixes y toward s).
    y_bad = 0.05 * s + torch.tensor([0.0, 0.0, 0.01, 0.0], dtype=D)
    sy, yhy = float(s @ y_bad), float(y_bad @ h @ y_bad)
    assert sy >= mu1 * yhy and sy / float(s @ s) < mu2
    pair = double_damping(s, y_bad, lambda v: h @ v, mu1, mu2)
    ref_s, ref_y = _authors_double_damping(s, y_bad, h, mu1, mu2)
    assert bool(pair.lm) and not bool(pair.powell)
    torch.testing.assert_close(pair.s, ref_s)
    torch.testing.assert_close(pair.y, ref_y)
    assert not torch.allclose(pair.y, y_bad + mu2 * s)
    assert float(pair.s @ pair.y) == pytest.approx(mu2 * float(s @ s))
    # Both steps active on random pairs: still the reference.
    g = torch.Generator().manual_seed(11)
    for _ in range(20):
        s = torch.randn(4, generator=g, dtype=D)
        y = -0.3 * s + 0.2 * torch.randn(4, generator=g, dtype=D)
        pair = double_damping(s, y, lambda v: h @ v, mu1, mu2)
        ref_s, ref_y = _authors_double_damping(s, y, h, mu1, mu2)
        torch.testing.assert_close(pair.s, ref_s)
        torch.testing.assert_close(pair.y, ref_y)
    # ... and the optimizers' defaults.
    model = nn.Sequential(nn.Linear(3, 2)).to(D)
    for cls in (KBFGS, KBFGSL):
        opt = cls(model, LossKind.CROSS_ENTROPY)
        assert opt.lm_damping is LMDamping.POWELL and opt.pair_test is PairTest.AUTHORS
        opt.capture.remove()


@pytest.mark.parametrize("mu2", [1.0, 1.5])
def test_authors_lm_damping_for_mu2_at_least_one(mu2):
    """The authors' formula needs no mu2 < 1; s~.y = s~.s~ takes the limit y + (mu2 - 1) s~."""
    eye = lambda v: v  # noqa: E731
    s = torch.tensor([1.0, 2.0, -1.0], dtype=D)
    for y in (0.3 * s + torch.tensor([0.0, 0.1, 0.2], dtype=D), s.clone(), 1.2 * s):
        pair = double_damping(s, y, eye, 0.2, mu2)
        ss = float(s @ s)
        if float(pair.s @ y) < mu2 * float(pair.s @ pair.s):
            assert float(pair.s @ pair.y) == pytest.approx(mu2 * float(pair.s @ pair.s), rel=1e-12)
        assert torch.isfinite(pair.y).all() and float(pair.s @ pair.y) >= mu2 * ss * (1 - 1e-12) - 1e-12
    pair = double_damping(s, s.clone(), eye, 0.2, mu2)
    if mu2 > 1:
        torch.testing.assert_close(pair.y, s + (mu2 - 1) * s)


def test_pair_tests_follow_their_formulas():
    g = torch.Generator().manual_seed(12)
    for _ in range(50):
        s = torch.randn(5, generator=g, dtype=D)
        y = torch.randn(5, generator=g, dtype=D) + 0.5 * s
        grad = torch.randn(7, generator=g, dtype=D) * 10 ** float(torch.empty(1).uniform_(0, 5, generator=g))
        sy, ss = float(s @ y), float(s @ s)
        want_authors = sy > 1e-4 * ss * math.sqrt(float(grad @ grad))
        want_rel = sy > 1e-12 * math.sqrt(ss * float(y @ y))
        assert bool(pair_accepted(s, y, grad, PairTest.AUTHORS)) is want_authors
        assert bool(pair_accepted(s, y, grad, "relative")) is want_rel
    s = torch.ones(3, dtype=D)
    # A positive-curvature pair that the authors' test rejects because the gradient is huge.
    assert not bool(pair_accepted(s, 0.5 * s, torch.full((4,), 1e5, dtype=D), "authors"))
    assert bool(pair_accepted(s, 0.5 * s, torch.full((4,), 1e5, dtype=D), "relative"))
    assert bool(pair_accepted(s, 0.5 * s, torch.zeros(4, dtype=D), "authors"))
    assert not bool(pair_accepted(s, torch.full((3,), float("nan"), dtype=D), torch.zeros(4, dtype=D), "authors"))


def test_damping_keeps_repeated_bfgs_bounded_on_adversarial_pairs():
    """Many updates with non-positive curvature pairs: H stays SPD and bounded."""
    from asr_hf.optim.kbfgs import bfgs_inverse_update

    g = torch.Generator().manual_seed(2)
    n, mu1, mu2 = 5, 0.2, 0.3
    h = torch.eye(n, dtype=D)
    for _ in range(300):
        s = torch.randn(n, generator=g, dtype=D)
        y = -0.5 * s + 0.1 * torch.randn(n, generator=g, dtype=D)  # mostly negative curvature
        pair = double_damping(s, y, lambda v: h @ v, mu1, mu2)
        h, ok = bfgs_inverse_update(h, pair.s, pair.y)
        assert bool(ok)
    ev = torch.linalg.eigvalsh(h)
    assert ev[0] > 0
    assert ev[-1] <= 1 / mu2 * 10  # ||s||^2 / s.y <= 1/mu2 keeps H's spectrum near 1/mu2


def test_hooks_removed():
    model = _mlp()
    cap = KronCapture(model, find_layers(model))
    cap.remove()
    model2 = copy.deepcopy(model)
    assert not model2[0]._forward_hooks and not model._forward_hooks
