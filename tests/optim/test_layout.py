"""Block-diagonal curvature and block HF against the masked dense GGN."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from asr_hf.optim.base import LossKind, SampledData, TensorSource
from asr_hf.optim.curvature import GGNOperator, HessianOperator
from asr_hf.optim.layout import ParamLayout, module_blocks, parameter_blocks
from asr_hf.optim.losses import loss_sum
from asr_hf.optim.registry import build_optimizer
from asr_hf.optim.solvers import conjugate_gradient

DT = torch.float64




def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)
    ).to(DT)


def _data(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=DT)
    teacher = torch.randn(4, 3, generator=g, dtype=DT)
    return x, (x @ teacher).argmax(1)  # learnable labels


def _dense_ggn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    layout = ParamLayout.from_module(model)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(layout.names, layout.unflatten(flat))), (x,))

    theta = layout.get_flat()
    jac = torch.autograd.functional.jacobian(f, theta)
    p = torch.softmax(f(theta), -1).detach()
    h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", jac, h, jac) / x.shape[0]


def test_block_layouts() -> None:
    model = _mlp()
    layer = module_blocks(model)
    assert layer.names == ["0", "2", "4"] and layer.block_of_param == [0, 0, 1, 1, 2, 2]
    assert layer.sizes() == [25, 24, 15]
    split = module_blocks(model, [["*.weight"], ["*.bias"]])
    assert split.num_blocks == 2 and split.block_of_param == [0, 1, 0, 1, 0, 1]
    merged = module_blocks(model, [["0.*", "2.*"]])
    assert merged.block_of_param == [0, 0, 0, 0, 1, 1]
    by_fn = module_blocks(model, lambda name: "last" if name.startswith("4.") else "rest")
    assert by_fn.names == ["rest", "last"]
    with pytest.raises(ValueError):
        module_blocks(model, [["nope.*"]])


@pytest.mark.parametrize("groups", [None, [["*.weight"], ["*.bias"]], [["0.*", "4.*"]], [["2.bias"]]])
@pytest.mark.parametrize("backend", ["sequential", "func"])
def test_block_diagonal_ggn_equals_masked_dense(groups, backend: str) -> None:
    model = _mlp()
    x, t = _data()
    blocks = module_blocks(model, groups)
    ref = _dense_ggn(model, x) * blocks.mask()
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x[:6], t[:6]), (x[6:], t[6:])], backend=backend, blocks=blocks)
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    op.damping = 0.25
    v = torch.randn(op.numel, dtype=DT)
    torch.testing.assert_close(op.matvec(v), ref @ v + 0.25 * v)


def test_block_diagonal_hessian_equals_masked_dense() -> None:
    model = _mlp()
    x, t = _data()
    layout = ParamLayout.from_module(model)
    blocks = parameter_blocks(layout)

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        z = functional_call(model, dict(zip(layout.names, layout.unflatten(flat))), (x,))
        return loss_sum(z, t, LossKind.CROSS_ENTROPY) / x.shape[0]

    ref = torch.autograd.functional.hessian(mean_loss, layout.get_flat()) * blocks.mask()
    op = HessianOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], blocks=blocks)
    torch.testing.assert_close(op.to_dense(), ref)


def test_batched_block_cg_solves_each_block() -> None:
    model = _mlp()
    x, t = _data()
    blocks = module_blocks(model)
    op = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], blocks=blocks, damping=1e-2)
    b = torch.randn(op.numel, dtype=DT)
    res = conjugate_gradient(
        op, b, segments=blocks.segments, num_segments=blocks.num_blocks, rtol=1e-10, progress_tol=None,
        max_iters=200,
    )
    dense = op.to_dense()
    torch.testing.assert_close(res.x, torch.linalg.solve(dense, b), rtol=1e-7, atol=1e-8)
    for j in range(blocks.num_blocks):  # and block j's solution only involves block j's system
        idx = (blocks.segments == j).nonzero().squeeze(1)
        torch.testing.assert_close(
            res.x[idx], torch.linalg.solve(dense[idx][:, idx], b[idx]), rtol=1e-7, atol=1e-8
        )


def test_block_hf_trains_a_small_mlp() -> None:
    model = _mlp(2)
    x, t = _data(200, seed=4)
    src = TensorSource(x, t)
    opt = build_optimizer("hf_block", model, LossKind.CROSS_ENTROPY, curv_fraction=0.5, seed=0)
    first = opt.step(SampledData(src, src))
    for _ in range(6):
        stats = opt.step(SampledData(src, src))
    assert stats["heldout_loss"] < 0.7 * first["heldout_loss_before"]
    assert stats["cg_iters"] > 0
