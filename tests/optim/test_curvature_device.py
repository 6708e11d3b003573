"""The GPU-path numerics of the curvature code, checked on CPU against dense float64
references: the forward cache without ``s'`` (derivatives recomputed from activations),
CG's ``phi`` on it, float32 accuracy, the automatic chunk size, the TF32 / IEEE
precision plumbing of an HF step, and the ``torch.compile`` option's fallback."""

import contextlib
import logging

import pytest
import torch
from torch import nn
from torch.func import functional_call

from asr_hf.optim import curvature, hf
from asr_hf.optim.base import LossKind, SampledData, TensorSource
from asr_hf.optim.curvature import GGNOperator, loss_and_gradient
from asr_hf.optim.device import CPU_CHUNK_SIZE, MAX_CHUNK_SIZE, auto_chunk_size, tf32_matmuls
from asr_hf.optim.hf import HessianFree
from asr_hf.optim.layout import ParamLayout, parameter_blocks
from asr_hf.optim.sequential import SequentialNet
from asr_hf.optim.solvers import DenseOperator, conjugate_gradient

DT = torch.float64
N, DIN, HID, C = 12, 5, 6, 4


def _net(act: type[nn.Module], trailing: bool = False, dtype: torch.dtype = DT, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(DIN, HID), act(), nn.Linear(HID, HID), act(), nn.Linear(HID, C)]
    if trailing:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers).to(dtype)


def _data(kind: LossKind, dtype: torch.dtype = DT, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(N, DIN, generator=g, dtype=dtype)  # wide enough to saturate some sigmoids
    if kind == LossKind.CROSS_ENTROPY:
        return x, torch.randint(0, C, (N,), generator=g)
    if kind == LossKind.MSE:
        return x, torch.randn(N, C, generator=g, dtype=dtype)
    return x, torch.rand(N, C, generator=g, dtype=dtype)


def _dense_ggn(model: nn.Module, kind: LossKind, x: torch.Tensor) -> torch.Tensor:
    """``(1/N) sum_n J_n^T H_n J_n``: autograd Jacobian, explicit output Hessians, float64."""
    model = model.to(DT)
    x = x.to(DT)
    layout = ParamLayout.from_module(model)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(layout.names, layout.unflatten(flat))), (x,))

    theta = layout.get_flat()
    jac = torch.autograd.functional.jacobian(f, theta)  # (N, C, P)
    z = f(theta).detach()
    if kind == LossKind.CROSS_ENTROPY:
        p = torch.softmax(z, -1)
        h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    elif kind == LossKind.MSE:
        h = torch.eye(z.shape[1], dtype=DT).expand(z.shape[0], -1, -1)
    else:
        s = torch.sigmoid(z)
        h = torch.diag_embed(s * (1 - s))
    return torch.einsum("ncp,ncd,ndq->pq", jac, h, jac) / x.shape[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ----------------------------------------------------------------------------- cache without s'


@pytest.mark.parametrize(
    "act,kind,trailing",
    [
        (nn.Sigmoid, LossKind.CROSS_ENTROPY, False),
        (nn.Tanh, LossKind.MSE, False),
        (nn.ReLU, LossKind.CROSS_ENTROPY, False),
        (nn.Sigmoid, LossKind.MSE, True),  # trailing activation: its output is cached itself
        (nn.Tanh, LossKind.BCE, False),
    ],
)
def test_products_from_cached_activations_match_dense_jthj(act, kind, trailing) -> None:
    model = _net(act, trailing)
    x, t = _data(kind)
    ref = _dense_ggn(model, kind, x)
    op = GGNOperator(model, kind, [(x[:5], t[:5]), (x[5:], t[5:])], backend="sequential")
    g = torch.Generator().manual_seed(2)
    v = torch.randn(op.numel, generator=g, dtype=DT)
    assert _rel(op.matvec(v), ref @ v) < 1e-12
    vm = torch.randn(op.numel, 3, generator=g, dtype=DT)
    assert _rel(op.matmat(vm), ref @ vm) < 1e-12
    # block-diagonal products (one batched pass) against the dense matrix's blocks
    blocks = parameter_blocks(op.layout, None)
    bop = GGNOperator(model, kind, [(x, t)], backend="sequential", blocks=blocks)
    mask = blocks.segments[:, None] == blocks.segments[None, :]
    assert _rel(bop.matvec(v), (ref * mask) @ v) < 1e-12


def test_cache_stores_each_activation_once() -> None:
    model = _net(nn.Sigmoid)
    x, t = _data(LossKind.CROSS_ENTROPY)
    net = SequentialNet.parse(model, ParamLayout.from_module(model))
    assert net is not None
    _, cache = net.forward(x)
    # ops: Linear, Sigmoid, Linear, Sigmoid, Linear: an activation's entry is its output,
    # the very tensor the next Linear caches as its input
    assert cache[1] is cache[2] and cache[3] is cache[4]
    torch.testing.assert_close(cache[1], torch.sigmoid(model[0](x)))
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)])
    assert op.cache_nbytes() == 0  # nothing cached before the first product
    op.matvec(torch.zeros(op.numel, dtype=DT))
    # network input + two hidden activations + softmax factor, float64
    assert op.cache_nbytes() == N * (DIN + 2 * HID + C) * 8


# ----------------------------------------------------------------------------- CG on the operator


def test_cg_phi_after_k_iterations_equals_dense_reference() -> None:
    model = _net(nn.Sigmoid, seed=4)
    kind = LossKind.CROSS_ENTROPY
    x, t = _data(kind, seed=5)
    lam = 1e-2
    dense = _dense_ggn(model, kind, x) + lam * torch.eye(ParamLayout.from_module(model).numel, dtype=DT)
    grad = loss_and_gradient(model, kind, [(x, t)]).grad
    op = GGNOperator(model, kind, [(x[:7], t[:7]), (x[7:], t[7:])], damping=lam)
    k = 8
    ours = conjugate_gradient(op, -grad, max_iters=k, progress_tol=None, grid=list(range(1, k + 1)))
    ref = conjugate_gradient(DenseOperator(dense), -grad, max_iters=k, progress_tol=None)
    assert ours.iterations == ref.iterations == k
    torch.testing.assert_close(torch.tensor(ours.phis), torch.tensor(ref.phis), rtol=1e-10, atol=1e-14)
    for it in ours.iterates:  # phi_i is the damped quadratic model at x_i
        q = float(grad @ it.x + 0.5 * it.x @ dense @ it.x)
        assert it.phi == pytest.approx(q, rel=1e-9, abs=1e-14)


def test_float32_products_and_cg_scalars_against_float64() -> None:
    """What a GPU run without TF32 computes, here in float32 on CPU: products within
    ~1e-6 of the float64 GGN and CG's phi within ~1e-5 after k iterations."""
    kind = LossKind.CROSS_ENTROPY
    model64 = _net(nn.Sigmoid, seed=6)
    model32 = _net(nn.Sigmoid, dtype=torch.float32, seed=6)
    x, t = _data(kind, seed=7)
    lam = 1e-2
    dense = _dense_ggn(model64, kind, x) + lam * torch.eye(ParamLayout.from_module(model64).numel, dtype=DT)
    op32 = GGNOperator(model32, kind, [(x.float(), t)], damping=lam)
    v = torch.randn(op32.numel, generator=torch.Generator().manual_seed(8), dtype=DT)
    assert _rel(op32.matvec(v.float()), dense @ v) < 1e-5
    g64 = loss_and_gradient(model64, kind, [(x, t)]).grad
    g32 = loss_and_gradient(model32, kind, [(x.float(), t)]).grad
    assert _rel(g32, g64) < 1e-5
    k = 6
    r32 = conjugate_gradient(op32, -g32, max_iters=k, progress_tol=None)
    r64 = conjugate_gradient(DenseOperator(dense), -g64, max_iters=k, progress_tol=None)
    assert r32.phis[-1] == pytest.approx(r64.phis[-1], rel=1e-5)


# ----------------------------------------------------------------------------- chunk size


def test_auto_chunk_size() -> None:
    with torch.device("meta"):  # the SWB-300 shape without allocating it
        swb = nn.Sequential(nn.Linear(440, 2048), *[nn.Linear(2048, 2048) for _ in range(5)], nn.Linear(2048, 9300))
    assert auto_chunk_size(swb, "cpu") == CPU_CHUNK_SIZE
    width = 440 + 2048 + 5 * 4096 + 2048 + 9300
    per_example = 4 * width * 4
    big = auto_chunk_size(swb, torch.device("cuda"), free_bytes=130 * 10**9)
    assert big == 32768 and big * per_example <= 0.25 * 130e9 < 2 * big * per_example
    assert auto_chunk_size(swb, "cuda", free_bytes=10**15) == MAX_CHUNK_SIZE
    assert auto_chunk_size(swb, "cuda", free_bytes=10**8) == CPU_CHUNK_SIZE  # the floor
    model = _net(nn.Sigmoid)
    assert HessianFree(model, LossKind.CROSS_ENTROPY).chunk_size == CPU_CHUNK_SIZE  # CPU default
    assert HessianFree(model, LossKind.CROSS_ENTROPY, chunk_size=37).chunk_size == 37  # explicit override
    with pytest.raises(ValueError):
        HessianFree(model, LossKind.CROSS_ENTROPY, chunk_size=0)


# ----------------------------------------------------------------------------- precision plumbing


def test_tf32_matmuls_sets_and_restores_the_cuda_flag() -> None:
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with tf32_matmuls(True, "cpu"):
        assert matmul.fp32_precision == before  # no-op off CUDA
    with tf32_matmuls(True, torch.device("cuda")):
        assert matmul.fp32_precision == "tf32"
        with tf32_matmuls(False, "cuda"):
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before


def test_hf_step_runs_gradient_and_products_in_tf32_and_heldout_losses_in_ieee(monkeypatch) -> None:
    """The device is CPU here, so the real flag cannot matter; a recording stand-in for
    :func:`tf32_matmuls` shows which parts of a step run under which setting."""
    modes: list[bool] = []

    @contextlib.contextmanager
    def recording(enabled: bool, device):
        modes.append(enabled)
        try:
            yield
        finally:
            modes.pop()

    monkeypatch.setattr(curvature, "tf32_matmuls", recording)
    monkeypatch.setattr(hf, "tf32_matmuls", recording)
    seen: dict[str, set] = {"forward": set(), "heldout": set()}
    real_forward = SequentialNet.forward

    def forward(self, x):
        seen["forward"].add(modes[-1] if modes else None)
        return real_forward(self, x)

    monkeypatch.setattr(SequentialNet, "forward", forward)
    model = _net(nn.Sigmoid, dtype=torch.float32)
    model.register_forward_hook(lambda *_: seen["heldout"].add(modes[-1] if modes else None))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, DIN, generator=g)
    t = torch.randint(0, C, (200,), generator=g)
    src = TensorSource(x, t)
    opt = HessianFree(model, LossKind.CROSS_ENTROPY, curv_fraction=0.5, cg_max_iters=5)
    assert opt.config.tf32  # on by default
    stats = opt.step(SampledData(src, src))
    assert stats["heldout_evals"] >= 1
    assert seen["forward"] == {True}  # gradient pass and the curvature sample's forward pass: TF32
    assert seen["heldout"] == {False}  # every held-out loss: IEEE float32
    seen = {"forward": set(), "heldout": set()}
    HessianFree(model, LossKind.CROSS_ENTROPY, curv_fraction=0.5, cg_max_iters=5, tf32=False).step(
        SampledData(src, src)
    )
    assert seen["forward"] == {None} and seen["heldout"] == {False}


# ----------------------------------------------------------------------------- torch.compile option


def test_compile_falls_back_to_eager(monkeypatch, caplog) -> None:
    model = _net(nn.ReLU)
    x, t = _data(LossKind.CROSS_ENTROPY)
    ref = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)])
    v = torch.randn(ref.numel, generator=torch.Generator().manual_seed(3), dtype=DT)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)  # compiles, then fails when run
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], compile=True)
    assert op.backend.compiled
    with caplog.at_level(logging.WARNING, logger="asr_hf.optim.curvature"):
        torch.testing.assert_close(op.matvec(v), ref.matvec(v), rtol=0, atol=0)
    assert not op.backend.compiled and "running eager" in caplog.text
    monkeypatch.setattr(torch, "compile", broken)  # fails at once
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], compile=True)
    assert not op.backend.compiled
    torch.testing.assert_close(op.matvec(v), ref.matvec(v), rtol=0, atol=0)
    with pytest.raises(ValueError, match="sequential"):
        GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], backend="func", compile=True)


@pytest.mark.slow
def test_compiled_product_matches_dense() -> None:
    """A real ``torch.compile`` (inductor on CPU: ~20 s to compile)."""
    model = _net(nn.Sigmoid)
    x, t = _data(LossKind.CROSS_ENTROPY)
    ref = _dense_ggn(model, LossKind.CROSS_ENTROPY, x)
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x[:7], t[:7]), (x[7:], t[7:])], compile=True)
    v = torch.randn(op.numel, generator=torch.Generator().manual_seed(4), dtype=DT)
    assert _rel(op.matvec(v), ref @ v) < 1e-12
    assert op.backend.compiled
