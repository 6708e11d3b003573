"""The Hessian-free optimizer: convergence on strongly convex problems, exact resume,
step rejection, registry, statistics."""

import copy

import pytest
import torch
from torch import nn

from asr_hf.optim.base import LossKind, OptimizerKind, SampledData, TensorSource
from asr_hf.optim.curvature import HessianOperator, loss_and_gradient
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.hf import HF_VARIANTS, HessianFree
from asr_hf.optim.registry import available_optimizers, build_optimizer, optimizer_kind

DT = torch.float64



def _logreg_problem(n: int = 240, d: int = 5, c: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=DT)
    w = 2 * torch.randn(d, c, generator=g, dtype=DT)
    probs = torch.softmax(x @ w, dim=1)
    t = torch.multinomial(probs, 1, generator=g).squeeze(1)
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, c)).to(DT), TensorSource(x, t)


def _newton_optimum(model: nn.Module, src: TensorSource, kind: LossKind, l2: float) -> torch.Tensor:
    """Dense float64 Newton on the strongly convex objective mean loss + 0.5 l2 |theta|^2."""
    ref = copy.deepcopy(model)
    layout = ParamLayout.from_module(ref)
    data = [(src.inputs, src.targets)]
    for _ in range(50):
        theta = layout.get_flat()
        g = loss_and_gradient(ref, kind, data).grad + l2 * theta
        if g.norm() < 1e-13:
            break
        h = HessianOperator(ref, kind, data, l2=l2).to_dense()
        layout.set_flat_(theta - torch.linalg.solve(h, g))
    return layout.get_flat()


@pytest.mark.parametrize("name", ["hf", "hf_diag", "hf_lbfgs", "hf_block"])
def test_hf_reaches_optimum_of_l2_logistic_regression(name: str) -> None:
    model, src = _logreg_problem()
    l2 = 1e-2
    opt_theta = _newton_optimum(model, src, LossKind.CROSS_ENTROPY, l2)
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, l2=l2, curv_fraction=1.0, chunk_size=100)
    assert isinstance(opt, HessianFree)
    data = SampledData(train=src, heldout=src)
    first = opt.step(data)
    for _ in range(24):
        stats = opt.step(data)
    theta = ParamLayout.from_module(model).get_flat()
    assert (theta - opt_theta).abs().max() < 1e-6
    assert stats["heldout_loss"] < first["heldout_loss_before"]


def test_hf_solves_least_squares() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=g, dtype=DT)
    y = x @ torch.randn(6, 2, generator=g, dtype=DT) + 0.1 * torch.randn(100, 2, generator=g, dtype=DT)
    model = nn.Sequential(nn.Linear(6, 2)).to(DT)
    src = TensorSource(x, y)
    opt = HessianFree(model, LossKind.MSE, curv_fraction=1.0, initial_damping=1e-3, min_damping=0.0)
    for _ in range(6):
        opt.step(SampledData(src, src))
    xa = torch.cat([x, torch.ones(100, 1, dtype=DT)], 1)
    sol = torch.linalg.lstsq(xa, y).solution  # (7, 2)
    lin = model[0]
    torch.testing.assert_close(lin.weight.detach(), sol[:6].T, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(lin.bias.detach(), sol[6], rtol=1e-7, atol=1e-8)


def _mlp_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 6, generator=g, dtype=DT)
    t = (torch.tanh(x @ torch.randn(6, 5, generator=g, dtype=DT)) @ torch.randn(5, 3, generator=g, dtype=DT)).argmax(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)).to(DT)
    return model, SampledData(TensorSource(x[:240], t[:240]), TensorSource(x[240:], t[240:]))


@pytest.mark.parametrize(
    "name,options",
    [
        (
            "hf_lbfgs_sampled",
            dict(grad_initial=0.2, curv_initial=0.05, curv_max_fraction=0.3, chunk_size=64),
        ),
        ("hf_block", dict(preconditioner="diagonal", curv_fraction=0.2, heldout_size=40)),
        ("hf_kfac_sampled", dict(grad_initial=0.2, curv_initial=0.05, curv_max_fraction=0.3, chunk_size=64)),
    ],
)
def test_state_dict_round_trip_continues_identically(name: str, options: dict) -> None:
    model, data = _mlp_problem()
    opt = build_optimizer(name, model, LossKind.CROSS_ENTROPY, seed=7, **options)
    for _ in range(3):
        opt.step(data)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    cont = [opt.step(data) for _ in range(3)]
    final = ParamLayout.from_module(model).get_flat()

    model2, _ = _mlp_problem(seed=5)  # different initial weights, overwritten by the load
    model2.load_state_dict(saved_model)
    opt2 = build_optimizer(name, model2, LossKind.CROSS_ENTROPY, seed=123, **options)
    opt2.load_state_dict(saved_opt)
    resumed = [opt2.step(data) for _ in range(3)]
    assert torch.equal(ParamLayout.from_module(model2).get_flat(), final)  # bitwise
    timing = {"time_gradient", "time_cg", "time_precond", "time_heldout", "wall_time"}
    for a, b in zip(cont, resumed):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    if name == "hf_lbfgs_sampled":
        assert cont[-1]["lbfgs_pairs"] > 0
        assert cont[-1]["grad_samples"] > cont[0]["grad_samples"]  # geometric growth
    if name == "hf_kfac_sampled":  # the factors' sampled targets resume too (their pass is counted)
        assert cont[-1]["examples_precond"] > cont[0]["examples_precond"] > 0


def test_step_that_does_not_reduce_heldout_loss_is_rejected() -> None:
    model, src = _logreg_problem(seed=3)
    # held-out labels shifted: whatever helps the training data hurts the held-out set
    adversarial = TensorSource(src.inputs, (src.targets + 1) % 4)
    before = ParamLayout.from_module(model).get_flat()
    opt = HessianFree(model, LossKind.CROSS_ENTROPY, curv_fraction=1.0, initial_damping=0.1)
    stats = opt.step(SampledData(train=src, heldout=adversarial))
    assert stats["accepted"] == 0.0 and stats["step_rate"] == 0.0
    assert stats["next_lambda"] == pytest.approx(0.15) and opt.damping == pytest.approx(0.15)
    assert torch.equal(ParamLayout.from_module(model).get_flat(), before)
    assert stats["heldout_loss"] == stats["heldout_loss_before"]


def test_registry_statistics_and_options() -> None:
    names = {"hf", "hf_lbfgs", "hf_lbfgs_sampled", "hf_block", "hf_diag", "hf_sampled", "hf_kfac", "hf_kfac_sampled"}
    assert names <= set(available_optimizers())
    assert set(HF_VARIANTS) == names
    for name in names:
        assert optimizer_kind(name) == OptimizerKind.SAMPLED
    model, data = _mlp_problem()
    opt = build_optimizer("hf_lbfgs", model, "cross_entropy", cg_max_iters=30, lbfgs_history=5)
    assert opt.kind == OptimizerKind.SAMPLED
    stats = opt.step(data)
    assert stats == opt.last_stats()
    for key in (
        "loss", "heldout_loss", "heldout_loss_before", "lambda", "rho", "cg_iters", "chosen_iter",
        "grad_samples", "curv_samples", "wall_time", "step_rate", "accepted",
    ):
        assert key in stats
    assert stats["cg_iters"] <= 30 and stats["lbfgs_pairs"] <= 5
    assert stats["grad_samples"] == 240 and stats["curv_samples"] == 3  # 1% of 240, rounded up
    with pytest.raises(TypeError):
        build_optimizer("hf", model, LossKind.CROSS_ENTROPY, no_such_option=1)
    with pytest.raises(ValueError):
        build_optimizer("hf_block", model, LossKind.CROSS_ENTROPY, preconditioner="lbfgs")
    with pytest.raises(ValueError, match="not 'kfac'"):
        build_optimizer("hf_block", model, LossKind.CROSS_ENTROPY, preconditioner="kfac")


def test_lbfgs_configurations_that_cannot_work_are_refused() -> None:
    model, _ = _mlp_problem()
    with pytest.raises(ValueError, match="flexible_cg=true"):
        build_optimizer("hf_lbfgs", model, LossKind.CROSS_ENTROPY, lbfgs_pairs="in_solve", flexible_cg=False)
    with pytest.raises(ValueError, match="flexible_cg=true"):
        build_optimizer("hf_lbfgs", model, LossKind.CROSS_ENTROPY, lbfgs_pairs="both", flexible_cg=False)
    with pytest.raises(ValueError):
        build_optimizer("hf_lbfgs", model, LossKind.CROSS_ENTROPY, lbfgs_pairs="kept")
    with pytest.raises(ValueError, match=">= 1"):
        build_optimizer("hf_lbfgs", model, LossKind.CROSS_ENTROPY, lbfgs_history=0)
    # the default is fixed during each solve, so plain PCG is allowed with it
    build_optimizer("hf_lbfgs", model, LossKind.CROSS_ENTROPY, flexible_cg=False)


def test_default_lbfgs_preconditions_from_the_second_hf_iteration() -> None:
    """Iteration 1 has no pairs (it equals plain HF exactly); from iteration 2 the
    previous run's pairs are active, so the CG run differs from plain CG's on the same
    system."""
    model, data = _mlp_problem()
    plain_m, lb_m = copy.deepcopy(model), copy.deepcopy(model)
    kw = dict(cg_max_iters=40, seed=3, curv_fraction=0.5, initial_damping=1e-3)  # ill-conditioned, full rank
    plain = HessianFree(plain_m, LossKind.CROSS_ENTROPY, **kw)
    lb = HessianFree(lb_m, LossKind.CROSS_ENTROPY, preconditioner="lbfgs", **kw)
    s1p, s1l = plain.step(data), lb.step(data)
    assert s1p["cg_iters"] == s1l["cg_iters"] and s1p["heldout_loss"] == s1l["heldout_loss"]
    assert s1l["lbfgs_pairs"] == min(10, s1l["cg_iters"])
    # the same second system for both: copy the parameters, damping and warm start over
    lb_m.load_state_dict(plain_m.state_dict())
    lb.damping, lb.prev_solution = plain.damping, plain.prev_solution.clone()
    s2p, s2l = plain.step(data), lb.step(data)
    assert s2l["lbfgs_pairs"] > s1l["lbfgs_pairs"]
    assert (s2p["cg_iters"], s2p["heldout_loss"]) != (s2l["cg_iters"], s2l["heldout_loss"])


def test_exact_hessian_curvature_and_chunking_invariance() -> None:
    model, data = _mlp_problem()
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    kw = dict(curv_fraction=0.5, seed=1)
    a = HessianFree(m1, LossKind.CROSS_ENTROPY, chunk_size=1000, **kw)
    b = HessianFree(m2, LossKind.CROSS_ENTROPY, chunk_size=37, **kw)
    for _ in range(3):
        sa, sb = a.step(data), b.step(data)
        assert sa["cg_iters"] == sb["cg_iters"] and abs(sa["heldout_loss"] - sb["heldout_loss"]) < 1e-10
    h = HessianFree(copy.deepcopy(model), LossKind.CROSS_ENTROPY, curvature="hessian", curv_fraction=0.5)
    f0 = h.step(data)["heldout_loss_before"]
    for _ in range(4):
        s = h.step(data)
    assert s["heldout_loss"] < f0


class _TwoTower(nn.Module):
    """Not an nn.Sequential: HF takes the generic torch.func path."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x)))


def test_hf_on_a_generic_float32_module() -> None:
    _, data = _mlp_problem()
    data32 = SampledData(
        TensorSource(data.train.inputs.float(), data.train.targets),
        TensorSource(data.heldout.inputs.float(), data.heldout.targets),
    )
    torch.manual_seed(0)
    model = _TwoTower()
    opt = build_optimizer("hf_diag", model, LossKind.CROSS_ENTROPY, curv_fraction=0.5)
    first = opt.step(data32)
    for _ in range(5):
        stats = opt.step(data32)
    assert stats["heldout_loss"] < 0.8 * first["heldout_loss_before"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
