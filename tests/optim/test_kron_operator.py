"""The Kronecker-factored inverse of KFAC / K-BFGS as a linear operator: its dense matrix
against ``blockdiag(H_G (x) H_A)`` built in float64, symmetry and positive definiteness,
and its use as the preconditioner of HF's CG on a real GGN."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind
from asr_hf.optim.curvature import GGNOperator
from asr_hf.optim.kbfgs import KBFGS, KBFGSL
from asr_hf.optim.kfac import KFAC
from asr_hf.optim.kron_operator import KroneckerInverse
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.solvers import DenseOperator, conjugate_gradient

D = torch.float64


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    # a layer with a bias, one without, and an untracked last layer (skip_layers)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3, bias=False), nn.Sigmoid(), nn.Linear(3, 6)).to(D)


def _trained(kind: str, steps: int = 4):
    model = _mlp()
    opts = dict(lr=0.05, damping=0.3, skip_layers=["^4$"])
    opt = {"kfac": lambda: KFAC(model, LossKind.CROSS_ENTROPY, inv_every=1, **opts),
           "kbfgs": lambda: KBFGS(model, LossKind.CROSS_ENTROPY, **opts),
           "kbfgs_l": lambda: KBFGSL(model, LossKind.CROSS_ENTROPY, memory=3, **opts)}[kind]()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 4, generator=g, dtype=D)
        t = torch.randint(0, 6, (32,), generator=g)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), t)
            loss.backward()
            return loss

        opt.step(closure)
    return model, opt


def _factors(opt, layer):
    state = opt.layer_state(layer)
    hg = state["HG"] if isinstance(opt, KFAC) else opt.hg_dense(layer)
    return hg, state["HA"]


def _dense_reference(model, opt) -> torch.Tensor:
    """``blockdiag_l (H_G (x) H_A^T)`` on row-major ``vec([W, b])`` mapped to the flat layout,
    identity on untracked parameters."""
    layout = ParamLayout.from_module(model)
    ref = torch.eye(layout.numel, dtype=D)
    for layer in opt.layers:
        hg, ha = _factors(opt, layer)
        w = layout.index[id(layer.weight)]
        pos = []  # flat position of V[i, j], row-major over V = [W, b] (d_out, d_a)
        for i in range(layer.d_out):
            pos += [layout.offsets[w] + i * layer.d_in + j for j in range(layer.d_in)]
            if layer.bias is not None:
                pos.append(layout.offsets[layout.index[id(layer.bias)]] + i)
        idx = torch.tensor(pos)
        ref[idx[:, None], idx[None, :]] = torch.kron(hg.contiguous(), ha.T.contiguous())
    return ref


@pytest.mark.parametrize("kind", ["kfac", "kbfgs", "kbfgs_l"])
def test_operator_equals_dense_kronecker_inverse(kind):
    model, opt = _trained(kind)
    assert [layer.name for layer in opt.layers] == ["0", "2"]
    op = KroneckerInverse(opt)
    dense = op.to_dense(dtype=D)
    ref = _dense_reference(model, opt)
    torch.testing.assert_close(dense, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(0.5 * (dense + dense.T)).min()) > 0
    # the operator applies exactly what the optimizer's own step applies to a gradient
    layer = opt.layers[0]
    m = torch.randn(layer.d_out, layer.d_a, dtype=D)
    torch.testing.assert_close(opt.precondition(layer, m), _factors(opt, layer)[0] @ m @ _factors(opt, layer)[1])


def test_operator_preconditions_hf_cg_on_the_ggn():
    model, opt = _trained("kfac")
    x = torch.randn(64, 4, dtype=D, generator=torch.Generator().manual_seed(5))
    t = torch.randint(0, 6, (64,), generator=torch.Generator().manual_seed(6))
    ggn = GGNOperator(model, LossKind.CROSS_ENTROPY, [(x, t)], damping=0.1)
    a = ggn.to_dense(dtype=D)
    b = torch.randn(a.shape[0], dtype=D, generator=torch.Generator().manual_seed(7))
    exact = torch.linalg.solve(a, b)
    precond = KroneckerInverse(opt)
    res = conjugate_gradient(ggn, b, precond=precond, max_iters=400, rtol=1e-10, progress_tol=None)
    torch.testing.assert_close(res.x, exact, rtol=1e-6, atol=1e-8)
    # the exact inverse as "curvature": preconditioned CG is done in one iteration
    p = precond.to_dense(dtype=D)
    one = conjugate_gradient(DenseOperator(torch.linalg.inv(p)), b, precond=precond, max_iters=5, rtol=1e-9,
                             progress_tol=None)  # fmt: skip
    assert one.iterations == 1
    torch.testing.assert_close(one.x, p @ b, rtol=1e-9, atol=1e-10)


def test_layout_of_a_submodule_and_untracked_scale():
    model, opt = _trained("kfac")
    sub = nn.Sequential(*list(model)[:3])  # the first two Linear layers only
    op = KroneckerInverse(opt, ParamLayout.from_module(sub), untracked_scale=2.0)
    assert op.numel == sum(p.numel() for p in sub.parameters())
    full = _dense_reference(model, opt)
    n = op.numel
    torch.testing.assert_close(op.to_dense(dtype=D), full[:n, :n])
    lone = KroneckerInverse(opt, ParamLayout([("w", model[4].weight)]), untracked_scale=2.0)
    v = torch.randn(lone.numel, dtype=D)
    torch.testing.assert_close(lone.matvec(v), 2 * v)
