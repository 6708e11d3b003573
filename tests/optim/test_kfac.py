"""KFAC: factors, damping, periodic inverses and the update against dense float64
references; exact resume; training progress."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind, OptimizerKind
from asr_hf.optim.kfac import KFAC
from asr_hf.optim.kron import CaptureSpec, KronCapture, find_layers
from asr_hf.optim.losses import loss_sum, sample_targets
from asr_hf.optim.registry import build_optimizer, optimizer_kind

D = torch.float64



def _mlp(seed=0, inplace=False, d_out=6):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3, bias=False), nn.ReLU(inplace=inplace), nn.Linear(3, d_out)
    ).to(D)


def _linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def _dense_forward(model, x):
    """Output z plus, per Linear, (abar, h) with h retaining its gradient."""
    acts, outs, z = [], [], x
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
    abars = [
        torch.cat([a, torch.ones(a.shape[0], 1, dtype=D)], 1) if m.bias is not None else a
        for m, a in zip(_linears(model), acts)
    ]
    return z, abars, outs


def _data_loss(z, t, kind):
    if kind is LossKind.CROSS_ENTROPY:
        return F.cross_entropy(z, t)
    return loss_sum(z, t, kind) / z.shape[0]


def _targets(kind, n, g):
    if kind is LossKind.CROSS_ENTROPY:
        return torch.randint(0, 6, (n,), generator=g)
    if kind is LossKind.BCE:
        return torch.rand(n, 6, generator=g, dtype=D)
    return torch.randn(n, 6, generator=g, dtype=D)


def _dense_layer_stats(model, x, t, kind):
    """Per layer: (A_batch, empirical G_batch, gradient matrix of the mean loss)."""
    ref = copy.deepcopy(model)
    z, abars, outs = _dense_forward(ref, x)
    _data_loss(z, t, kind).backward()
    n = x.shape[0]
    res = []
    for abar, h in zip(abars, outs):
        g = h.grad * n
        res.append((abar.T @ abar / n, g.T @ g / n, g.T @ abar / n))
    return res


def _closure(opt, model, x, t, kind=LossKind.CROSS_ENTROPY):
    def closure():
        opt.zero_grad()
        loss = _data_loss(model(x), t, kind)
        loss.backward()
        return loss

    return closure


def _theta(model):
    return [
        torch.cat([m.weight.detach(), m.bias.detach()[:, None]], 1) if m.bias is not None else m.weight.detach().clone()
        for m in _linears(model)
    ]


@pytest.mark.parametrize("kind", list(LossKind))
@pytest.mark.parametrize("inplace", [False, True])
def test_sampled_fisher_factor_equals_dense_definition(kind, inplace):
    model = _mlp(1, inplace=inplace)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=g, dtype=D)
    t = _targets(kind, 9, g)
    cap = KronCapture(model, find_layers(model), loss_kind=kind, seed=11)
    with cap.capturing(CaptureSpec(sampled_grad_cov=True)) as c:
        model.zero_grad()
        _data_loss(model(x), t, kind).backward()
    # Reference: same draws from the model's predictive distribution, per-row gradients of
    # the summed sampled loss, G = mean_i g_i g_i^T.
    ref = _mlp(1)
    z, _, outs = _dense_forward(ref, x)
    ts = sample_targets(z.detach(), kind, torch.Generator().manual_seed(11))
    loss_sum(z, ts, kind).backward()
    for layer, h in zip(find_layers(model), outs):
        st = c.stats[layer.name]
        torch.testing.assert_close(st.mean("sampled_gg_sum"), h.grad.T @ h.grad / 9)
    # The data-target backward of the closure is unaffected (param grads = true gradient).
    ref2 = _mlp(1)
    _data_loss(ref2(x), t, kind).backward()
    for p, q in zip(model.parameters(), ref2.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_two_kfac_steps_equal_dense_reference():
    lr, lam, mu, wd = 0.2, 0.5, 0.9, 0.01
    model = _mlp(2)
    ref_model = copy.deepcopy(model)
    opt = build_optimizer(
        "kfac", model, LossKind.CROSS_ENTROPY, lr=lr, damping=lam, momentum=mu, weight_decay=wd, fisher="empirical"
    )
    assert isinstance(opt, KFAC) and optimizer_kind("kfac") is OptimizerKind.MINIBATCH
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g, dtype=D), torch.randint(0, 6, (8,), generator=g)) for _ in range(2)]

    theta = _theta(ref_model)
    a_f = g_f = mom = None
    for k, (x, t) in enumerate(batches):
        stats = _dense_layer_stats(ref_model, x, t, LossKind.CROSS_ENTROPY)
        decay = [0.0, 0.5][k]
        a_f = [s[0] if k == 0 else decay * a + (1 - decay) * s[0] for a, s in zip(a_f or stats, stats)]
        g_f = [s[1] if k == 0 else decay * gg + (1 - decay) * s[1] for gg, s in zip(g_f or stats, stats)]
        grads = [s[2] + wd * th for s, th in zip(stats, theta)]
        mom = [(1 - mu) * gr if k == 0 else mu * m + (1 - mu) * gr for m, gr in zip(mom or grads, grads)]
        new = []
        for a, gg, m, th in zip(a_f, g_f, mom, theta):
            ha = torch.linalg.inv(a + math.sqrt(lam) * torch.eye(a.shape[0], dtype=D))
            hg = torch.linalg.inv(gg + math.sqrt(lam) * torch.eye(gg.shape[0], dtype=D))
            new.append(th - lr * hg @ m @ ha)
        theta = new
        with torch.no_grad():
            for mod, th in zip(_linears(ref_model), theta):
                mod.weight.copy_(th[:, : mod.in_features])
                if mod.bias is not None:
                    mod.bias.copy_(th[:, mod.in_features])
        loss = opt.step(_closure(opt, model, x, t))
        assert loss.item() > 0
    for got, want in zip(_theta(model), theta):
        torch.testing.assert_close(got, want)
    for layer, a, gg in zip(opt.layers, a_f, g_f):
        torch.testing.assert_close(opt.layer_state(layer)["A"], a)
        torch.testing.assert_close(opt.layer_state(layer)["G"], gg)
    stats = opt.last_stats()
    assert set(stats) >= {"loss", "grad_norm", "update_norm", "lr", "damping"}
    assert all(isinstance(v, float) for v in stats.values())


def test_periodic_inverses_and_pi_damping():
    model = _mlp(3)
    opt = KFAC(model, LossKind.CROSS_ENTROPY, lr=0.05, damping=0.7, inv_every=2, pi_damping=True)
    g = torch.Generator().manual_seed(2)
    saved = None
    for k in range(4):
        x, t = torch.randn(8, 4, generator=g, dtype=D), torch.randint(0, 6, (8,), generator=g)
        opt.step(_closure(opt, model, x, t))
        st = opt.layer_state(opt.layers[0])
        a, gg = st["A"], st["G"]
        pi = math.sqrt((torch.trace(a) / a.shape[0]) / (torch.trace(gg) / gg.shape[0]))
        ha = torch.linalg.inv(a + pi * math.sqrt(0.7) * torch.eye(a.shape[0], dtype=D))
        hg = torch.linalg.inv(gg + math.sqrt(0.7) / pi * torch.eye(gg.shape[0], dtype=D))
        if k < 3:  # steps 0, 1 (warm-up) and 2 (period) refresh the inverses
            torch.testing.assert_close(st["HA"], ha)
            torch.testing.assert_close(st["HG"], hg)
            saved = st["HA"].clone()
        else:  # step 3 keeps step 2's inverse while the factor moved on
            torch.testing.assert_close(st["HA"], saved)
            assert not torch.allclose(st["HA"], ha)
        assert opt.last_stats()["inverses_updated"] == float(k < 3)


def test_untracked_parameters_get_momentum_sgd():
    model = _mlp(4)
    opt = KFAC(model, LossKind.CROSS_ENTROPY, lr=0.3, momentum=0.9, skip_layers=[r"^0$"], weight_decay=0.1)
    assert [layer.name for layer in opt.layers] == ["2", "4"]
    w0 = model[0].weight.detach().clone()
    x, t = torch.randn(8, 4, dtype=D), torch.randint(0, 6, (8,))
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(x), t).backward()
    opt.step(_closure(opt, model, x, t))
    expected = w0 - 0.3 * 0.1 * (ref[0].weight.grad + 0.1 * w0)
    torch.testing.assert_close(model[0].weight.detach(), expected)


def test_state_dict_round_trip_resumes_exactly():
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(8, 4, generator=g, dtype=D), torch.randint(0, 6, (8,), generator=g)) for _ in range(6)]
    opts = dict(lr=0.1, damping=0.3, inv_every=2, fisher="sampled", seed=3)
    model = _mlp(5)
    opt = build_optimizer("kfac", model, LossKind.CROSS_ENTROPY, **opts)
    for x, t in batches[:3]:
        opt.step(_closure(opt, model, x, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for x, t in batches[3:]:
        opt.step(_closure(opt, model, x, t))

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2 = _mlp(99)
    model2.load_state_dict(ckpt["model"])
    opt2 = build_optimizer("kfac", model2, LossKind.CROSS_ENTROPY, **opts)
    opt2.load_state_dict(ckpt["opt"])
    for x, t in batches[3:]:
        opt2.step(_closure(opt2, model2, x, t))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt2.steps == opt.steps == 6


def _autoencoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4), nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 16)
    ).to(D)


def _ae_data():
    g = torch.Generator().manual_seed(0)
    codes = torch.rand(256, 3, generator=g, dtype=D)
    return torch.sigmoid(4 * (codes @ torch.randn(3, 16, generator=g, dtype=D)))


def test_kfac_trains_small_autoencoder():
    x = _ae_data()
    model = _autoencoder()
    opt = KFAC(model, LossKind.BCE, lr=0.1, damping=0.3)
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
    floor = -(x * x.log() + (1 - x) * (1 - x).log()).sum(1).mean().item()  # BCE's minimum
    assert end - floor < 0.6 * (start - floor)
