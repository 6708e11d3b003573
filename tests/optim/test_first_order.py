"""First-order baselines: registry, torch-identical updates, stats, exact resume."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind, OptimizerKind
from asr_hf.optim.registry import available_optimizers, build_optimizer, optimizer_kind

D = torch.float64


CASES = [
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), torch.optim.SGD),
    ("adam", dict(lr=0.01, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.001), torch.optim.Adam),
    ("adamw", dict(lr=0.01, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.05), torch.optim.AdamW),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-4, momentum=0.5, centered=True), torch.optim.RMSprop),
]


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)


def _batches(n=5):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g, dtype=D), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _closure(opt, model, x, t):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        return loss

    return closure


def test_registered_as_minibatch():
    names = available_optimizers()
    for name in ("sgd", "adam", "adamw", "rmsprop", "kfac", "kbfgs", "kbfgs_l", "soap", "shampoo", "psgd"):
        assert name in names
        assert optimizer_kind(name) is OptimizerKind.MINIBATCH
        assert names[name].help


@pytest.mark.parametrize("name,options,torch_cls", CASES)
def test_updates_equal_torch_and_stats(name, options, torch_cls):
    model = _model()
    ref = copy.deepcopy(model)
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, **options)
    assert isinstance(opt, torch_cls)
    ref_opts = dict(options)
    if "betas" in ref_opts:
        ref_opts["betas"] = tuple(ref_opts["betas"])
    ref_opt = torch_cls(ref.parameters(), **ref_opts)
    for x, t in _batches():
        loss = opt.step(_closure(opt, model, x, t))
        ref_loss = ref_opt.step(_closure(ref_opt, ref, x, t))
        assert loss.item() == ref_loss.item()
        stats = opt.last_stats()
        assert stats["loss"] == pytest.approx(loss.item())
        grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())).item()
        assert stats["grad_norm"] == pytest.approx(grad_norm)
        assert stats["lr"] == options["lr"]
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("name,options,torch_cls", CASES)
def test_state_dict_round_trip(name, options, torch_cls):
    batches = _batches(6)
    model = _model(2)
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, **options)
    for x, t in batches[:3]:
        opt.step(_closure(opt, model, x, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for x, t in batches[3:]:
        opt.step(_closure(opt, model, x, t))
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2 = _model(3)
    model2.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(name, model2, LossKind.CROSS_ENTROPY, **options)
    opt2.load_state_dict(ckpt["opt"])
    for x, t in batches[3:]:
        opt2.step(_closure(opt2, model2, x, t))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_step_without_closure_uses_existing_gradients():
    model = _model()
    opt = build_optimizer("sgd", model, LossKind.CROSS_ENTROPY, lr=0.5, momentum=0.0)
    x, t = _batches(1)[0]
    F.cross_entropy(model(x), t).backward()
    w = model[0].weight.detach().clone()
    g = model[0].weight.grad.clone()
    assert opt.step() is None
    torch.testing.assert_close(model[0].weight.detach(), w - 0.5 * g)
    assert "loss" not in opt.last_stats()
