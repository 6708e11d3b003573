"""Approximated-Hessian SGD: multi-secant direction vs dense float64 formulas, the sync plan,
safeguards, world size 1 = SGD, exact resume and a real 2-process gloo run."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.ahsgd import ApproxHessianSGD, helmert_basis, multisecant_direction, plan_sync
from asr_hf.optim.base import LocalReducer, LossKind, OptimizerKind
from asr_hf.optim.registry import build_optimizer, optimizer_info

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(n: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(n, n, generator=g, dtype=D)
    return a @ a.T + n * torch.eye(n, dtype=D)


def _dense_h(S, Y, lam, h0):
    """``h0 I + (S - h0 Y)(Y^T Y + lam I)^{-1} Y^T`` built explicitly (torch.linalg.solve)."""
    n, k = S.shape
    return h0 * torch.eye(n, dtype=D) + (S - h0 * Y) @ torch.linalg.solve(Y.T @ Y + lam * torch.eye(k, dtype=D), Y.T)


# ------------------------------------------------------------------ pure math


@pytest.mark.parametrize("h0", [0.0, 0.3])
def test_full_span_secant_step_is_newton(h0):
    """Y = A S with m = n spanning columns, no damping: H = A^-1, one eta=1 step hits the minimiser."""
    g = _gen(0)
    n = 6
    A = _spd(n, g)
    b = torch.randn(n, generator=g, dtype=D)
    S = torch.randn(n, n, generator=g, dtype=D)
    Y = A @ S
    x0 = torch.randn(n, generator=g, dtype=D)
    grad = A @ x0 - b
    d = multisecant_direction(S, Y, grad, damping=0.0, h0=h0)
    torch.testing.assert_close(d, torch.linalg.solve(A, grad), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(x0 - d, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("damping,h0", [(0.0, 0.0), (0.05, 0.0), (0.0, 0.2), (0.05, 0.2)])
def test_low_rank_direction_matches_dense_formula(damping, h0):
    g = _gen(1)
    n, m = 9, 3
    A = _spd(n, g)
    S = torch.randn(n, m, generator=g, dtype=D)
    Y = A @ S + 0.1 * torch.randn(n, m, generator=g, dtype=D)  # noisy secant pairs
    grad = torch.randn(n, generator=g, dtype=D)
    d = multisecant_direction(S, Y, grad, damping=damping, h0=h0)
    torch.testing.assert_close(d, _dense_h(S, Y, damping, h0) @ grad, rtol=1e-10, atol=1e-12)
    if h0:  # the secant conditions hold in the least-squares sense, h0 I on span(Y)^perp
        z = torch.randn(n, generator=g, dtype=D)
        z = z - Y @ torch.linalg.lstsq(Y, z).solution
        torch.testing.assert_close(multisecant_direction(S, Y, z, damping=damping, h0=h0), h0 * z)


def test_singular_undamped_gram_uses_pseudo_inverse():
    g = _gen(2)
    n = 7
    S = torch.randn(n, 3, generator=g, dtype=D)
    y = torch.randn(n, 2, generator=g, dtype=D)
    Y = torch.cat([y, y[:, :1]], dim=1)  # rank 2
    grad = torch.randn(n, generator=g, dtype=D)
    d = multisecant_direction(S, Y, grad)
    torch.testing.assert_close(d, S @ torch.linalg.pinv(Y) @ grad, rtol=1e-9, atol=1e-11)


def _workers(m: int, n: int, seed: int):
    g = _gen(seed)
    theta_bar = torch.randn(n, generator=g, dtype=D)
    U = 0.1 * torch.randn(n, m, generator=g, dtype=D)  # theta_i - theta_bar
    G = torch.randn(n, m, generator=g, dtype=D)  # g_i
    return theta_bar, U, G


def _reference_sync(theta_bar, U, G, *, eta, damping, h0):
    """theta_mean - eta H g_mean with the centred S, Y and lambda = damping tr(Y^T Y)/(m-1)."""
    m = U.shape[1]
    theta = theta_bar[:, None] + U
    theta_mean, g_mean = theta.mean(1), G.mean(1)
    S, Y = theta - theta_mean[:, None], G - g_mean[:, None]
    lam = damping * torch.trace(Y.T @ Y) / (m - 1)
    return theta_mean - eta * _dense_h(S, Y, lam, h0) @ g_mean, theta_mean


def _apply_plan(plan, theta_bar, U, G):
    return theta_bar + U @ plan.a + G @ plan.b


@pytest.mark.parametrize("m", [2, 4])
def test_sync_plan_matches_dense_reference(m):
    theta_bar, U, G = _workers(m, 11, seed=3 + m)
    Z = torch.cat([U, G], dim=1)
    plan = plan_sync(Z.T @ Z, eta=0.7, damping=0.01, h0=0.05, max_step_ratio=None, max_condition=1e12)
    ref, theta_mean = _reference_sync(theta_bar, U, G, eta=0.7, damping=0.01, h0=0.05)
    new = _apply_plan(plan, theta_bar, U, G)
    torch.testing.assert_close(new, ref, rtol=1e-10, atol=1e-12)
    assert not plan.fallback and not plan.capped and plan.rank == m - 1
    assert plan.step_norm == pytest.approx(float((new - theta_mean).norm()), rel=1e-9)
    assert plan.disp_rms == pytest.approx(math.sqrt(float((U**2).sum()) / m), rel=1e-12)
    q = helmert_basis(m)
    torch.testing.assert_close(q.T @ q, torch.eye(m - 1, dtype=D))
    torch.testing.assert_close(q.sum(0), torch.zeros(m - 1, dtype=D))


def test_sync_plan_is_scale_free():
    """Scaling the loss (all gradients) by 1000 with h0 / 1000 leaves the update unchanged."""
    theta_bar, U, G = _workers(3, 8, seed=9)
    kw = dict(eta=1.0, damping=0.1, max_step_ratio=None, max_condition=1e12)
    Z1, Z2 = torch.cat([U, G], 1), torch.cat([U, 1000 * G], 1)
    new1 = _apply_plan(plan_sync(Z1.T @ Z1, h0=0.02, **kw), theta_bar, U, G)
    new2 = _apply_plan(plan_sync(Z2.T @ Z2, h0=0.02 / 1000, **kw), theta_bar, U, 1000 * G)
    torch.testing.assert_close(new1, new2, rtol=1e-9, atol=1e-12)


def test_step_cap_and_fallback():
    theta_bar, U, G = _workers(3, 10, seed=4)
    Z = torch.cat([U, G], 1)
    plan = plan_sync(Z.T @ Z, eta=1.0, damping=0.01, h0=0.5, max_step_ratio=0.5, max_condition=1e12)
    assert plan.capped and not plan.fallback
    theta_mean = theta_bar + U.mean(1)
    step = _apply_plan(plan, theta_bar, U, G) - theta_mean
    assert float(step.norm()) == pytest.approx(0.5 * plan.disp_rms, rel=1e-9)
    free = plan_sync(Z.T @ Z, eta=1.0, damping=0.01, h0=0.5, max_step_ratio=None, max_condition=1e12)
    torch.testing.assert_close(step / step.norm(), (_apply_plan(free, theta_bar, U, G) - theta_mean) / free.step_norm)

    # two workers with identical gradients: the undamped reduced Gram matrix is singular -> fallback
    G2 = torch.cat([G[:, :2], G[:, 1:2]], 1)
    Z2 = torch.cat([U, G2], 1)
    plan = plan_sync(Z2.T @ Z2, eta=0.9, damping=0.0, h0=0.3, max_step_ratio=None, max_condition=1e10)
    assert plan.fallback and plan.condition > 1e10
    torch.testing.assert_close(_apply_plan(plan, theta_bar, U, G2), theta_mean - 0.9 * 0.3 * G2.mean(1))
    nan = Z.T @ Z
    nan[0, 1] = nan[1, 0] = float("nan")
    assert plan_sync(nan, eta=1.0, damping=0.01, h0=0.1, max_step_ratio=4.0, max_condition=1e12).fallback


# ------------------------------------------------------------------ optimizer, one process


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)


def _batches(n, seed=1, rows=8):
    g = _gen(seed)
    return [(torch.randn(rows, 5, generator=g, dtype=D), torch.randint(0, 3, (rows,), generator=g)) for _ in range(n)]


def _closure(opt, model, x, t):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        return loss

    return closure


def test_registered_and_built_with_reducer():
    info = optimizer_info("ahsgd")
    assert info.kind is OptimizerKind.MINIBATCH and info.data_parallel == "reducer" and info.help
    reducer = LocalReducer()
    opt = build_optimizer("ahsgd", _model(), LossKind.CROSS_ENTROPY, lr=0.05, sync_period=4, reducer=reducer)
    assert isinstance(opt, ApproxHessianSGD) and opt.reducer is reducer and opt.sync_period == 4
    assert opt.current_h0() == 0.05
    with pytest.raises(ValueError):
        ApproxHessianSGD(_model().parameters(), lr=0.1, sync_period=1)
    with pytest.raises(ValueError):
        ApproxHessianSGD(_model().parameters(), lr=0.1, momentum_sync="sum")


def test_world_size_one_is_plain_sgd():
    model, ref = _model(), _model()
    opt = ApproxHessianSGD(model.parameters(), lr=0.1, sync_period=3, momentum=0.9, weight_decay=0.01)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for i, (x, t) in enumerate(_batches(7)):
        loss = opt.step(_closure(opt, model, x, t))
        assert loss.item() == ref_opt.step(_closure(ref_opt, ref, x, t)).item()
        assert opt.last_stats()["synced"] == float((i + 1) % 3 == 0)
    assert opt.last_stats()["syncs"] == 2.0
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_state_dict_round_trip_world_one():
    batches = _batches(8, seed=5)
    model = _model(2)
    opt = ApproxHessianSGD(model.parameters(), lr=0.1, sync_period=3, momentum=0.5)
    for x, t in batches[:4]:
        opt.step(_closure(opt, model, x, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for x, t in batches[4:]:
        opt.step(_closure(opt, model, x, t))
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    model2 = _model(3)
    model2.load_state_dict(ckpt["model"])
    opt2 = ApproxHessianSGD(model2.parameters(), lr=0.1, sync_period=3, momentum=0.5)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.round_step == 1
    for x, t in batches[4:]:
        opt2.step(_closure(opt2, model2, x, t))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------------------ two gloo workers

SYNC_OPTS = dict(lr=0.1, sync_period=3, eta=0.8, damping=0.01, momentum=0.5, weight_decay=0.01, max_step_ratio=None)


def _worker(rank: int, world_size: int, out_dir: str) -> None:
    """Three experiments in one spawn (module-level so the spawned process can import it)."""
    from asr_hf.optim.distributed import DistReducer

    torch.set_num_threads(1)
    reducer = DistReducer()
    result: dict = {}

    # 1. one sync, with everything the dense reference needs
    model = _model(0)
    opt = ApproxHessianSGD(model.parameters(), reducer=reducer, **SYNC_OPTS)
    batches = _batches(6, seed=10 + rank)
    for x, t in batches[:3]:
        opt.step(_closure(opt, model, x, t))
    assert opt.at_round_boundary
    result["theta_bar"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    for x, t in batches[3:5]:
        opt.step(_closure(opt, model, x, t))
    result["theta_i"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    result["mom_before"] = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in model.parameters()]).clone()
    opt.step(_closure(opt, model, *batches[5]))
    result["grad_i"] = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    result["theta_new"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    result["stats"] = opt.last_stats()
    result["mom_after"] = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in model.parameters()])

    # 2. exact resume from a mid-round state dict (per-rank, as the trainer keeps them)
    batches = _batches(6, seed=20 + rank)  # saved after call 4 (mid-round), the sync is call 6
    model = _model(1)
    opt = ApproxHessianSGD(model.parameters(), reducer=reducer, **SYNC_OPTS)
    for x, t in batches[:4]:
        opt.step(_closure(opt, model, x, t))
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    for x, t in batches[4:]:
        opt.step(_closure(opt, model, x, t))
    model2 = _model(7)
    model2.load_state_dict(saved["model"])
    opt2 = ApproxHessianSGD(model2.parameters(), reducer=reducer, **SYNC_OPTS)
    opt2.load_state_dict(saved["opt"])
    for x, t in batches[4:]:
        opt2.step(_closure(opt2, model2, x, t))
    result["resume_equal"] = all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))
    result["resume_theta"] = torch.cat([p.detach().reshape(-1) for p in model2.parameters()])

    # 3. softmax regression on this rank's shard: the global loss goes down
    g = _gen(100 + rank)
    w_true = torch.randn(5, 3, generator=_gen(99), dtype=D) * 2
    x = torch.randn(256, 5, generator=g, dtype=D)
    t = (x @ w_true).argmax(1)
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).to(D)
    opt = ApproxHessianSGD(
        lin.parameters(), lr=0.2, sync_period=4, momentum=0.5, momentum_sync="reset", reducer=reducer
    )

    def global_loss() -> float:
        with torch.no_grad():
            return float(reducer.all_reduce_(F.cross_entropy(lin(x), t).reshape(1)) / world_size)

    result["loss_before"] = global_loss()
    perm = torch.randperm(256, generator=g)
    for k in range(40):
        idx = perm[(k * 32) % 256 : (k * 32) % 256 + 32]
        opt.step(_closure(opt, lin, x[idx], t[idx]))
    result["loss_after"] = global_loss()
    result["syncs"] = opt.syncs
    result["reset_ok"] = all("momentum_buffer" not in opt.state[p] for p in lin.parameters())  # ended on a sync
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def test_two_gloo_workers(tmp_path):
    from asr_hf.optim.distributed import run_local_workers

    run_local_workers(_worker, 2, str(tmp_path))
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=False) for i in range(2)]

    # the sync equals the dense float64 reference built from both workers' theta_i and g_i
    assert torch.equal(r[0]["theta_bar"], r[1]["theta_bar"])
    theta_bar = r[0]["theta_bar"]
    U = torch.stack([ri["theta_i"] - theta_bar for ri in r], 1)
    G = torch.stack([ri["grad_i"] + SYNC_OPTS["weight_decay"] * ri["theta_i"] for ri in r], 1)
    ref, _ = _reference_sync(
        theta_bar, U, G, eta=SYNC_OPTS["eta"], damping=SYNC_OPTS["damping"], h0=SYNC_OPTS["lr"]
    )
    assert not torch.equal(U[:, 0], U[:, 1])  # the workers did diverge within the round
    torch.testing.assert_close(r[0]["theta_new"], ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(r[0]["theta_new"], r[1]["theta_new"])  # bitwise-identical on both ranks
    for ri in r:
        s = ri["stats"]
        assert s["synced"] == 1.0 and s["fallback"] == 0.0 and s["capped"] == 0.0 and s["secant_rank"] == 1.0
        assert s["comm_seconds"] > 0.0 and s["step_norm"] > 0.0
    # momentum_sync="average": both ranks continue with the mean of their buffers
    assert torch.equal(r[0]["mom_after"], r[1]["mom_after"])
    torch.testing.assert_close(r[0]["mom_after"], 0.5 * (r[0]["mom_before"] + r[1]["mom_before"]))

    # resume from a mid-round state dict continues exactly; ranks agree after the sync
    assert r[0]["resume_equal"] and r[1]["resume_equal"]
    assert torch.equal(r[0]["resume_theta"], r[1]["resume_theta"])

    # training decreases the global loss
    assert r[0]["syncs"] == 10 and r[0]["reset_ok"] and r[1]["reset_ok"]
    assert r[0]["loss_after"] < 0.5 * r[0]["loss_before"]
    assert r[0]["loss_after"] == r[1]["loss_after"]
