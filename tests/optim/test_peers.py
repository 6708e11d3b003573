"""Peer optimizers (AdamW, heavyball's SOAP / Shampoo / PSGD-Kron): built from their Hydra
configs, they train a tiny MLP; the missing-extra error; option checking; exact resume."""

import io
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from asr_hf.nnet.config import compose
from asr_hf.optim.base import LossKind, OptimizerKind
from asr_hf.optim.peers import PEERS_EXTRA, MissingExtraError
from asr_hf.optim.registry import build_optimizer, optimizer_info

HEAVYBALL = ("soap", "shampoo", "psgd")
PEERS = ("adamw",) + HEAVYBALL


def _needs(name):
    if name in HEAVYBALL:
        pytest.importorskip("heavyball")


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 4))


def _data(n=128):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return x, x[:, :4].argmax(1)


def _closure(opt, model, x, t):
    def closure():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        return loss

    return closure


def _options(name):
    cfg = compose([f"optim={name}"])
    assert cfg.optim.name == name
    return OmegaConf.to_container(cfg.optim.options, resolve=True) or {}


@pytest.mark.parametrize("name", PEERS)
def test_builds_from_config_and_reduces_the_loss(name):
    _needs(name)
    info = optimizer_info(name)
    assert info.kind is OptimizerKind.MINIBATCH and info.data_parallel == "ddp" and info.help
    model = _model()
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, **_options(name))
    x, t = _data()
    losses = [float(opt.step(_closure(opt, model, x, t)).detach()) for _ in range(40)]
    assert losses[-1] < losses[0] - 0.02
    assert all(b < a for a, b in zip(losses[::10], losses[10::10]))  # steadily
    stats = opt.last_stats()
    assert stats["loss"] == pytest.approx(losses[-1])
    assert stats["lr"] == pytest.approx(_options(name)["lr"]) and stats["grad_norm"] > 0  # the config's rate


@pytest.mark.parametrize("name", HEAVYBALL)
def test_missing_heavyball_names_the_extra(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "heavyball", None)  # `import heavyball` now fails
    with pytest.raises(MissingExtraError, match=r'pip install "asr_hf\[peers\]"') as err:
        build_optimizer(name, _model(), LossKind.CROSS_ENTROPY)
    assert PEERS_EXTRA in str(err.value) and name in str(err.value)
    assert isinstance(err.value, ImportError)


@pytest.mark.parametrize("name", ("sgd", "adam") + PEERS)
def test_unknown_option_is_an_error_like_the_first_order_ones(name):
    _needs(name)
    with pytest.raises(TypeError, match="no_such_option"):
        build_optimizer(name, _model(), LossKind.CROSS_ENTROPY, no_such_option=1)


@pytest.mark.parametrize("name", PEERS)
def test_state_dict_round_trip(name):
    _needs(name)
    x, t = _data()
    opts = _options(name)
    model = _model(2)
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, **opts)
    for _ in range(3):
        opt.step(_closure(opt, model, x, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    rng = torch.get_rng_state()  # PSGD draws its probe vectors from the global RNG
    for _ in range(3):
        opt.step(_closure(opt, model, x, t))
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2 = _model(3)
    model2.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(name, model2, LossKind.CROSS_ENTROPY, **opts)
    opt2.load_state_dict(ckpt["opt"])
    torch.set_rng_state(rng)
    for _ in range(3):
        opt2.step(_closure(opt2, model2, x, t))
    for p, q in zip(model.parameters(), model2.parameters()):
        if name == "psgd":
            # heavyball's PSGD resumes to float32 rounding, not bitwise, on some CPUs (this
            # 2-core Xeon, 2026-12-02: differences of a few ulp after 3 steps)
            torch.testing.assert_close(q, p)
        else:
            assert torch.equal(p, q)


def test_compile_option_sets_heavyballs_mode():
    heavyball = pytest.importorskip("heavyball")
    build_optimizer("soap", _model(), LossKind.CROSS_ENTROPY)
    assert heavyball.utils.compile_mode is None  # eager by default
    try:
        build_optimizer("soap", _model(), LossKind.CROSS_ENTROPY, compile=True)
        assert heavyball.utils.compile_mode == "max-autotune-no-cudagraphs"  # heavyball's own
    finally:
        build_optimizer("soap", _model(), LossKind.CROSS_ENTROPY, compile=False)
    assert heavyball.utils.compile_mode is None


def test_bf16_autocast_allowed_as_for_other_gradient_only_optimizers():
    from asr_hf.optim.registry import available_optimizers

    bf16_safe = {name for name, entry in available_optimizers().items() if entry.bf16_safe}
    assert set(PEERS) <= bf16_safe
    assert not {"kfac", "kbfgs", "kbfgs_l", "hf"} & bf16_safe
