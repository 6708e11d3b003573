"""K-BFGS / K-BFGS(L): BFGS algebra, the full step against a dense float64 reference,
L-BFGS = dense BFGS, exact resume, training progress."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind, OptimizerKind
from asr_hf.optim.kbfgs import KBFGS, KBFGSL, bfgs_inverse_update
from asr_hf.optim.kron_factors import double_damping
from asr_hf.optim.losses import loss_sum
from asr_hf.optim.lbfgs import LBFGSMemory
from asr_hf.optim.registry import build_optimizer, optimizer_kind

D = torch.float64



def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3, bias=False), nn.Tanh(), nn.Linear(3, 6)).to(D)


def _linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def _theta(model):
    return [
        torch.cat([m.weight.detach(), m.bias.detach()[:, None]], 1) if m.bias is not None else m.weight.detach().clone()
        for m in _linears(model)
    ]


def _set_theta(model, theta):
    with torch.no_grad():
        for mod, th in zip(_linears(model), theta):
            mod.weight.copy_(th[:, : mod.in_features])
            if mod.bias is not None:
                mod.bias.copy_(th[:, mod.in_features])


def _dense_pass(model, x, t):
    """Per layer: (abar (N, d_a), h (N, d_out), g = d l_i/d h_i (N, d_out), Grad (d_out, d_a))."""
    ref = copy.deepcopy(model)
    acts, outs, z = [], [], x
    for mod in ref:
        if isinstance(mod, nn.Linear):
            acts.append(z.detach())
            z = F.linear(z, mod.weight, mod.bias)
            z.retain_grad()
            outs.append(z)
        else:
            z = mod(z)
    F.cross_entropy(z, t).backward()
    n = x.shape[0]
    res = []
    for mod, a, h in zip(_linears(ref), acts, outs):
        abar = torch.cat([a, torch.ones(n, 1, dtype=D)], 1) if mod.bias is not None else a
        g = h.grad * n
        res.append((abar, h.detach(), g, g.T @ abar / n))
    return res


def _bfgs_product_form(h, s, y):
    rho = 1.0 / float(s @ y)
    v = torch.eye(h.shape[0], dtype=D) - rho * torch.outer(s, y)
    return v @ h @ v.T + rho * torch.outer(s, s)


def _closure(opt, model, x, t, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        return loss

    return closure


def _spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=D)
    return a @ a.T / n + 0.5 * torch.eye(n, dtype=D)


def test_bfgs_update_secant_symmetry_and_definition():
    g = torch.Generator().manual_seed(0)
    h = _spd(6, 1)
    s = torch.randn(6, generator=g, dtype=D)
    y = _spd(6, 2) @ s
    new, ok = bfgs_inverse_update(h, s, y)
    assert bool(ok)
    torch.testing.assert_close(new @ y, s)  # secant equation H+ y = s
    torch.testing.assert_close(new, new.T)
    torch.testing.assert_close(new, _bfgs_product_form(h, s, y))
    assert torch.linalg.eigvalsh(new)[0] > 0
    same, ok = bfgs_inverse_update(h, s, -y)  # negative curvature: rejected
    assert not bool(ok) and torch.equal(same, h)


def test_lbfgs_two_loop_equals_dense_bfgs_for_damped_pairs():
    g = torch.Generator().manual_seed(3)
    n, m = 5, 7
    h = torch.eye(n, dtype=D)
    mem = LBFGSMemory(history=m, initial_scale=1.0)
    for _ in range(m):
        s = torch.randn(n, generator=g, dtype=D)
        y = torch.randn(n, generator=g, dtype=D)  # arbitrary curvature, made safe by damping
        pair = double_damping(s, y, lambda v: h @ v, 0.2, 0.3)
        h, ok = bfgs_inverse_update(h, pair.s, pair.y)
        assert bool(ok) and mem.push(pair.s, pair.y)
    v = torch.randn(n, 3, generator=g, dtype=D)
    torch.testing.assert_close(mem.apply(v), h @ v)
    torch.testing.assert_close(mem.apply(torch.eye(n, dtype=D)), h)


def _authors_lm(s, y, mu2):
    """The authors' LM step (Powell with B = I), written from their formulas."""
    ss, sy = float(s @ s), float(s @ y)
    if sy / ss > mu2:
        return y
    t = (1 - mu2) * ss / (ss - sy)
    return t * y + (1 - t) * s


def _authors_accept(s, y, g):
    return float(s @ y) > 1e-4 * float(s @ s) * float(g.norm())


@pytest.mark.parametrize("authors", [True, False], ids=["authors_default", "additive_relative"])
def test_three_kbfgs_steps_equal_dense_reference(authors):
    lr, lam, mu, wd = 0.2, 0.25, 0.9, 0.01
    root = math.sqrt(lam)
    model = _mlp(1)
    variant = {} if authors else {"lm_damping": "additive", "pair_test": "relative"}
    opt = build_optimizer(
        "kbfgs", model, LossKind.CROSS_ENTROPY, lr=lr, damping=lam, momentum=mu, weight_decay=wd, **variant
    )
    assert isinstance(opt, KBFGS) and optimizer_kind("kbfgs") is OptimizerKind.MINIBATCH
    ref = _mlp(1)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(10, 4, generator=g, dtype=D), torch.randint(0, 6, (10,), generator=g)) for _ in range(3)]

    theta = _theta(ref)
    nl = len(theta)
    A, HA, mom, s_avg, y_avg = [None] * nl, [None] * nl, [None] * nl, [None] * nl, [None] * nl
    HG = [torch.eye(th.shape[0], dtype=D) for th in theta]
    n_lm = 0
    for k, (x, t) in enumerate(batches):
        first = _dense_pass(ref, x, t)
        d = min(1 - 1 / (k + 1), 0.9)
        new = []
        for i, (abar, h, gr, grad) in enumerate(first):
            a_b = abar.T @ abar / abar.shape[0]
            A[i] = a_b if k == 0 else d * A[i] + (1 - d) * a_b
            eye_a = torch.eye(A[i].shape[0], dtype=D)
            if k == 0:
                HA[i] = torch.linalg.inv(A[i] + root * eye_a)
            gw = grad + wd * theta[i]
            mom[i] = (1 - mu) * gw if k == 0 else mu * mom[i] + (1 - mu) * gw
            new.append(theta[i] - lr * HG[i] @ mom[i] @ HA[i])
        theta = new
        _set_theta(ref, theta)
        second = _dense_pass(ref, x, t)  # same minibatch, new parameters
        for i, ((abar, h, gr, _), (_, h2, g2, _)) in enumerate(zip(first, second)):
            s, y = h2.mean(0) - h.mean(0), g2.mean(0) - gr.mean(0)
            s_avg[i] = 0.1 * s if k == 0 else 0.9 * s_avg[i] + 0.1 * s
            y_avg[i] = 0.1 * y if k == 0 else 0.9 * y_avg[i] + 0.1 * y
            s, y = s_avg[i], y_avg[i]
            hy = HG[i] @ y
            yhy, sy = float(y @ hy), float(s @ y)
            if sy < 0.2 * yhy:  # Powell on H
                th_p = 0.8 * yhy / (yhy - sy)
                s = th_p * s + (1 - th_p) * hy
            if authors:
                y_lm = _authors_lm(s, y, root)
                n_lm += y_lm is not y
                y = y_lm
                assert _authors_accept(s, y, gr.mean(0))  # the test accepts these pairs
            else:
                y = y + root * s  # additive Levenberg-Marquardt
            HG[i] = _bfgs_product_form(HG[i], s, y)
            s_a = HA[i] @ abar.mean(0)  # Hessian-action BFGS of H_A
            y_a = (A[i] + root * torch.eye(A[i].shape[0], dtype=D)) @ s_a
            assert not authors or _authors_accept(s_a, y_a, abar.mean(0))
            HA[i] = _bfgs_product_form(HA[i], s_a, y_a)

        calls = []
        loss = opt.step(_closure(opt, model, x, t, calls))
        assert len(calls) == 2
        stats = opt.last_stats()
        with torch.no_grad():
            assert stats["loss_new"] == pytest.approx(F.cross_entropy(model(x), t).item())
            assert loss.item() == pytest.approx(stats["loss"])
        assert stats["pairs"] == 3 and stats["pairs_rejected"] == 0
    if authors:
        assert 0 < n_lm < 9  # both branches of the authors' LM rule were exercised
    for got, want in zip(_theta(model), theta):
        torch.testing.assert_close(got, want)
    for layer, a, ha, hg in zip(opt.layers, A, HA, HG):
        st = opt.layer_state(layer)
        torch.testing.assert_close(st["A"], a)
        torch.testing.assert_close(st["HA"], ha)
        torch.testing.assert_close(opt.hg_dense(layer), hg)
        torch.testing.assert_close(hg, hg.T)
        assert torch.linalg.eigvalsh(hg)[0] > 0


def test_kbfgs_l_with_enough_memory_follows_kbfgs():
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(10, 4, generator=g, dtype=D), torch.randint(0, 6, (10,), generator=g)) for _ in range(4)]
    m1, m2 = _mlp(2), _mlp(2)
    o1 = build_optimizer("kbfgs", m1, LossKind.CROSS_ENTROPY, lr=0.3, damping=0.1)
    o2 = build_optimizer("kbfgs_l", m2, LossKind.CROSS_ENTROPY, lr=0.3, damping=0.1, memory=10)
    assert isinstance(o2, KBFGSL) and optimizer_kind("kbfgs_l") is OptimizerKind.MINIBATCH
    for x, t in batches:
        o1.step(_closure(o1, m1, x, t))
        o2.step(_closure(o2, m2, x, t))
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q)
    for l1, l2 in zip(o1.layers, o2.layers):
        torch.testing.assert_close(o2.hg_dense(l2), o1.hg_dense(l1))
        assert len(o2.memories[l2.name]) == 4


@pytest.mark.parametrize("cls", [KBFGS, KBFGSL])
def test_pair_test_gates_the_factor_update(cls):
    model = _mlp(3)
    opt = cls(model, LossKind.CROSS_ENTROPY)
    layer = opt.layers[0]
    s = torch.linspace(0.5, 1.5, layer.d_out, dtype=D)
    y = 2.0 * s
    before = opt.hg_dense(layer)
    assert not bool(opt.hg_update(layer, s, y, torch.tensor(False)))
    torch.testing.assert_close(opt.hg_dense(layer), before)
    assert bool(opt.hg_update(layer, s, y, torch.tensor(True)))
    torch.testing.assert_close(opt.hg_dense(layer) @ y, s)  # secant equation of the new H_G


def test_exact_activation_inverse_refresh():
    model = _mlp(3)
    opt = KBFGS(model, LossKind.CROSS_ENTROPY, lr=0.1, damping=0.49, a_inverse="exact", a_inv_every=2)
    g = torch.Generator().manual_seed(5)
    for k in range(3):
        x, t = torch.randn(10, 4, generator=g, dtype=D), torch.randint(0, 6, (10,), generator=g)
        opt.step(_closure(opt, model, x, t))
        st = opt.layer_state(opt.layers[0])
        exact = torch.linalg.inv(st["A"] + 0.7 * torch.eye(st["A"].shape[0], dtype=D))
        if k % 2 == 0:
            torch.testing.assert_close(st["HA"], exact)
        else:
            assert not torch.allclose(st["HA"], exact)


@pytest.mark.parametrize(
    "name,extra",
    [("kbfgs", {}), ("kbfgs_l", {"memory": 3}), ("kbfgs", {"lm_damping": "additive", "pair_test": "relative"})],
)
def test_state_dict_round_trip_resumes_exactly(name, extra):
    g = torch.Generator().manual_seed(6)
    batches = [(torch.randn(10, 4, generator=g, dtype=D), torch.randint(0, 6, (10,), generator=g)) for _ in range(8)]
    opts = dict(lr=0.2, damping=0.3, weight_decay=1e-3, **extra)
    model = _mlp(4)
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, **opts)
    for x, t in batches[:5]:  # more steps than the L-BFGS memory holds
        opt.step(_closure(opt, model, x, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for x, t in batches[5:]:
        opt.step(_closure(opt, model, x, t))
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2 = _mlp(77)
    model2.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(name, model2, LossKind.CROSS_ENTROPY, **opts)
    opt2.load_state_dict(ckpt["opt"])
    for x, t in batches[5:]:
        opt2.step(_closure(opt2, model2, x, t))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def _autoencoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4), nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 16)
    ).to(D)


@pytest.mark.parametrize("name", ["kbfgs", "kbfgs_l"])
def test_kbfgs_trains_small_autoencoder(name):
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(256, 3, generator=g, dtype=D)
    x = torch.sigmoid(4 * (codes @ torch.randn(3, 16, generator=g, dtype=D)))
    model = _autoencoder()
    opt = build_optimizer(name, model, LossKind.BCE, lr=0.3, damping=0.3)
    lossf = lambda: loss_sum(model(x), x, LossKind.BCE) / x.shape[0]  # noqa: E731
    with torch.no_grad():
        start = lossf().item()
    for _ in range(40):
        def closure():
            opt.zero_grad()
            loss = lossf()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        end = lossf().item()
    floor = -(x * x.log() + (1 - x) * (1 - x).log()).sum(1).mean().item()
    assert end - floor < 0.6 * (start - floor)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["kbfgs", "kbfgs_l", "kfac"])
def test_cuda_matches_cpu(name):
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(10, 4, generator=g, dtype=D), torch.randint(0, 6, (10,), generator=g)) for _ in range(3)]
    results = []
    for device in ("cpu", "cuda"):
        model = _mlp(5).to(device)
        opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, lr=0.2, damping=0.3, **({"fisher": "empirical"} if name == "kfac" else {}))
        for x, t in batches:
            opt.step(_closure(opt, model, x.to(device), t.to(device)))
        results.append([p.detach().cpu() for p in model.parameters()])
        assert all(isinstance(v, float) for v in opt.last_stats().values())
    for p, q in zip(*results):
        torch.testing.assert_close(p, q)
