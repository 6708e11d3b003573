"""Preconditioners: Martens' diagonal and the L-BFGS operator fed by CG."""

import math

import torch

from asr_hf.optim.precond import (
    DiagonalPreconditioner,
    IdentityPreconditioner,
    LBFGSPreconditioner,
)
from asr_hf.optim.solvers import DenseOperator, conjugate_gradient

DT = torch.float64




def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    return (q * torch.logspace(0, 3, n, dtype=DT)) @ q.T


def test_identity_and_diagonal_empirical_fisher() -> None:
    v = torch.randn(6, dtype=DT)
    assert torch.equal(IdentityPreconditioner(6).matvec(v), v)
    sq = torch.rand(6, dtype=DT)
    m = DiagonalPreconditioner.empirical_fisher(sq, damping=0.5, exponent=0.75, l2=0.1)
    torch.testing.assert_close(m.diag, (sq + 0.6) ** 0.75)
    torch.testing.assert_close(m.matvec(v), v / (sq + 0.6) ** 0.75)
    torch.testing.assert_close(m.to_dense() @ v, m.matvec(v))


def _cg_pairs(a: torch.Tensor, prec: LBFGSPreconditioner, iters: int, seed: int = 1) -> None:
    b = torch.randn(a.shape[0], generator=torch.Generator().manual_seed(seed), dtype=DT)
    conjugate_gradient(
        DenseOperator(a), b, precond=prec, flexible=True, observe=prec.observe, max_iters=iters, progress_tol=None
    )


def test_lbfgs_preconditioner_is_the_explicit_bfgs_matrix() -> None:
    n = 12
    a = _spd(n)
    prec = LBFGSPreconditioner(n, history=5)
    prec.begin_solve(0.0)
    _cg_pairs(a, prec, iters=8)
    prec.end_solve()
    assert len(prec.memory) == 5
    h = prec.memory.dense(n)
    v = torch.randn(n, dtype=DT)
    torch.testing.assert_close(prec.matvec(v), h @ v)
    # it is symmetric positive definite and satisfies the newest secant equation
    torch.testing.assert_close(h, h.T)
    assert torch.linalg.eigvalsh(h).min() > 0
    s, y = prec.memory._s[-1], prec.memory._y[-1]
    torch.testing.assert_close(prec.matvec(y), s)


def test_damping_shift_turns_pairs_of_a_into_pairs_of_a_plus_delta() -> None:
    n = 10
    a = _spd(n, 2)
    prec = LBFGSPreconditioner(n, history=6, keep_pairs=True)
    prec.begin_solve(0.5)
    _cg_pairs(a + 0.5 * torch.eye(n, dtype=DT), prec, iters=6)
    prec.end_solve()
    s_list = [s.clone() for s in prec.memory._s]
    prec.begin_solve(2.0)  # damping changed: y += 1.5 s
    ref = LBFGSPreconditioner(n, history=6)
    ref.begin_solve(0.0)
    for s in s_list:
        ref.memory.push(s, (a + 2.0 * torch.eye(n, dtype=DT)) @ s)
    torch.testing.assert_close(prec.memory.dense(n), ref.memory.dense(n))


def test_pair_timing_and_reset_options() -> None:
    n = 8
    a = _spd(n, 3)
    later = LBFGSPreconditioner(n, history=4, update_in_cg=False)
    later.begin_solve(0.0)
    assert later.fixed
    _cg_pairs(a, later, iters=5)
    assert len(later.memory) == 0  # pairs wait for the end of the solve
    later.end_solve()
    assert len(later.memory) == 4
    fresh = LBFGSPreconditioner(n, history=4, keep_pairs=False)
    fresh.begin_solve(0.0)
    _cg_pairs(a, fresh, iters=5)
    assert len(fresh.memory) == 4 and not fresh.fixed
    fresh.begin_solve(0.0)
    assert len(fresh.memory) == 0
    v = torch.randn(n, dtype=DT)
    assert torch.equal(fresh.matvec(v), v)  # empty memory = identity


def test_state_round_trip() -> None:
    n = 9
    a = _spd(n, 4)
    prec = LBFGSPreconditioner(n, history=3)
    prec.begin_solve(0.1)
    _cg_pairs(a, prec, iters=4)
    clone = LBFGSPreconditioner(n, history=3)
    clone.load_state_dict(prec.state_dict())
    v = torch.randn(n, dtype=DT)
    assert torch.equal(clone.matvec(v), prec.matvec(v))
    assert clone.damping == 0.1 and clone.accepted == prec.accepted
    assert math.isfinite(float(clone.matvec(v).sum()))
