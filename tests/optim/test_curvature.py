"""GGN / Hessian products against explicitly formed float64 matrices."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from asr_hf.optim.base import LossKind
from asr_hf.optim.curvature import GGNOperator, HessianOperator, evaluate_loss, loss_and_gradient
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.losses import apply_output_hessian, loss_sum, output_hessian_factor
from asr_hf.optim.sequential import SequentialNet

DT = torch.float64


N, DIN, HID, C = 9, 4, 5, 3


def _net(act: type[nn.Module] = nn.Sigmoid, seed: int = 0, trailing: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(DIN, HID), act(), nn.Linear(HID, HID), act(), nn.Linear(HID, C)]
    if trailing:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers).to(DT)


def _data(kind: LossKind, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DIN, generator=g, dtype=DT)
    if kind == LossKind.CROSS_ENTROPY:
        t = torch.randint(0, C, (N,), generator=g)
    elif kind == LossKind.MSE:
        t = torch.randn(N, C, generator=g, dtype=DT)
    else:
        t = torch.rand(N, C, generator=g, dtype=DT)
    return x, t


def _output_hessian(kind: LossKind, z: torch.Tensor) -> torch.Tensor:
    """Explicit (N, C, C) output Hessians."""
    if kind == LossKind.CROSS_ENTROPY:
        p = torch.softmax(z, -1)
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    if kind == LossKind.MSE:
        return torch.eye(z.shape[1], dtype=z.dtype).expand(z.shape[0], -1, -1)
    s = torch.sigmoid(z)
    return torch.diag_embed(s * (1 - s))


def _dense_ggn(model: nn.Module, kind: LossKind, x: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_n J_n^T H_n J_n with J from torch.autograd.functional.jacobian."""
    layout = ParamLayout.from_module(model)
    theta = layout.get_flat()

    def f(flat: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(layout.names, layout.unflatten(flat))), (x,))

    jac = torch.autograd.functional.jacobian(f, theta)  # (N, C, P)
    h = _output_hessian(kind, f(theta).detach())
    return torch.einsum("ncp,ncd,ndq->pq", jac, h, jac) / x.shape[0]


@pytest.mark.parametrize("kind", list(LossKind))
@pytest.mark.parametrize("backend", ["sequential", "func", "double_backward"])
def test_ggn_equals_explicit_jthj(kind: LossKind, backend: str) -> None:
    model = _net(nn.Tanh if kind == LossKind.MSE else nn.Sigmoid)
    x, t = _data(kind)
    ref = _dense_ggn(model, kind, x)
    op = GGNOperator(model, kind, [(x[:4], t[:4]), (x[4:], t[4:])], backend=backend)  # two chunks
    assert op.backend_name == backend
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    evals = torch.linalg.eigvalsh(ref)
    assert evals.min() > -1e-12  # PSD


def test_ggn_damping_l2_tuple_and_relu() -> None:
    model = _net(nn.ReLU, seed=3)
    x, t = _data(LossKind.CROSS_ENTROPY)
    ref = _dense_ggn(model, LossKind.CROSS_ENTROPY, x)
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], damping=0.3, l2=0.2)
    v = torch.randn(op.numel, dtype=DT)
    torch.testing.assert_close(op.matvec(v), ref @ v + 0.5 * v)
    out = op.matvec(tuple(op.layout.unflatten(v)))
    assert isinstance(out, tuple) and [o.shape for o in out] == op.layout.shapes
    torch.testing.assert_close(op.layout.flatten(out), ref @ v + 0.5 * v)
    vm = torch.randn(op.numel, 3, dtype=DT)
    torch.testing.assert_close(op.matmat(vm), ref @ vm + 0.5 * vm)
    assert op.num_products == 3 + 2


def test_trailing_activation_and_uncached_products() -> None:
    model = _net(nn.Sigmoid, trailing=True)
    x, t = _data(LossKind.MSE)
    ref = _dense_ggn(model, LossKind.MSE, x)
    for cache in (True, False):
        op = GGNOperator(model, LossKind.MSE, [(x, t)], backend="sequential", cache=cache)
        torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)


class _Residual(nn.Module):
    """Not a Sequential: exercises the generic torch.func path."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(DIN, HID)
        self.b = nn.Linear(HID, C)
        self.skip = nn.Linear(DIN, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))) + self.skip(x)


def test_generic_model_uses_func_backend() -> None:
    torch.manual_seed(0)
    model = _Residual().to(DT)
    x, t = _data(LossKind.CROSS_ENTROPY)
    assert SequentialNet.parse(model, ParamLayout.from_module(model)) is None
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)])
    assert op.backend_name == "func"
    torch.testing.assert_close(op.to_dense(), _dense_ggn(model, LossKind.CROSS_ENTROPY, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", [LossKind.CROSS_ENTROPY, LossKind.BCE])
def test_hessian_operator_equals_autograd_hessian(kind: LossKind) -> None:
    model = _net(nn.Tanh)
    x, t = _data(kind)
    layout = ParamLayout.from_module(model)

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        z = functional_call(model, dict(zip(layout.names, layout.unflatten(flat))), (x,))
        return loss_sum(z, t, kind) / N

    ref = torch.autograd.functional.hessian(mean_loss, layout.get_flat())
    for cache in (True, False):
        op = HessianOperator(model, kind, [(x[:5], t[:5]), (x[5:], t[5:])], damping=0.1, cache=cache)
        torch.testing.assert_close(op.to_dense(), ref + 0.1 * torch.eye(op.numel, dtype=DT))


def test_output_hessian_is_applied_analytically() -> None:
    z = torch.randn(6, 4, dtype=DT)
    u = torch.randn(2, 6, 4, dtype=DT)  # leading batch dimension broadcasts
    for kind in LossKind:
        h = _output_hessian(kind, z)
        got = apply_output_hessian(kind, output_hessian_factor(z, kind), u)
        torch.testing.assert_close(got, torch.einsum("ncd,knd->knc", h, u))


@pytest.mark.parametrize("model_fn", [lambda: _net(nn.Sigmoid), lambda: _Residual().to(DT)])
def test_loss_gradient_and_empirical_fisher(model_fn) -> None:
    torch.manual_seed(0)
    model = model_fn()
    x, t = _data(LossKind.CROSS_ENTROPY)
    layout = ParamLayout.from_module(model)
    res = loss_and_gradient(model, LossKind.CROSS_ENTROPY, [(x[:4], t[:4]), (x[4:], t[4:])], square=True)
    loss = loss_sum(model(x), t, LossKind.CROSS_ENTROPY) / N
    grads = torch.autograd.grad(loss, layout.params)
    assert res.count == N
    assert abs(res.loss - float(loss)) < 1e-12
    torch.testing.assert_close(res.grad, layout.flatten(grads))
    per_ex = []
    for n in range(N):
        ln = loss_sum(model(x[n : n + 1]), t[n : n + 1], LossKind.CROSS_ENTROPY)
        per_ex.append(layout.flatten(torch.autograd.grad(ln, layout.params)))
    torch.testing.assert_close(res.sq_grad, torch.stack(per_ex).pow(2).mean(0))
    s, n = evaluate_loss(model, LossKind.CROSS_ENTROPY, [(x, t)])
    assert n == N and abs(s / n - float(loss)) < 1e-12


class _TwoWorkers:
    """A reducer that pretends a second worker holds an identical shard."""

    world_size = 2

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.mul_(2)


def test_reducer_sums_products_and_counts() -> None:
    model = _net()
    x, t = _data(LossKind.CROSS_ENTROPY)
    local = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)])
    dist = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], reducer=_TwoWorkers())
    v = torch.randn(local.numel, dtype=DT)
    torch.testing.assert_close(dist.matvec(v), local.matvec(v))
    assert dist.count == 2 * N
    g1 = loss_and_gradient(model, LossKind.CROSS_ENTROPY, [(x, t)])
    g2 = loss_and_gradient(model, LossKind.CROSS_ENTROPY, [(x, t)], reducer=_TwoWorkers())
    torch.testing.assert_close(g1.grad, g2.grad)
    assert abs(g1.loss - g2.loss) < 1e-14
