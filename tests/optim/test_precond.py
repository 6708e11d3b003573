"""Preconditioners: Martens' diagonal and the L-BFGS operator fed by CG."""

import math

import torch

import pytest

from asr_hf.optim.precond import (
    DiagonalPreconditioner,
    IdentityPreconditioner,
    LBFGSPairSource,
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


def _previous_run(prec: LBFGSPreconditioner, a: torch.Tensor, damping: float, iters: int, seed: int = 1) -> None:
    prec.begin_solve(damping)
    _cg_pairs(a, prec, iters=iters, seed=seed)
    prec.end_solve()


def test_lbfgs_preconditioner_is_the_explicit_bfgs_matrix() -> None:
    n = 12
    a = _spd(n)
    prec = LBFGSPreconditioner(n, history=5, pairs_per_solve=5)
    _previous_run(prec, a, 0.0, iters=8)
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
    prec = LBFGSPreconditioner(n, history=6, pairs_per_solve=6)
    _previous_run(prec, a + 0.5 * torch.eye(n, dtype=DT), 0.5, iters=6)
    s_list = [s.clone() for s in prec.memory._s]
    prec.begin_solve(2.0)  # damping changed: y += 1.5 s
    ref = LBFGSPreconditioner(n, history=6)
    for s in s_list:
        ref.memory.push(s, (a + 2.0 * torch.eye(n, dtype=DT)) @ s)
    torch.testing.assert_close(prec.memory.dense(n), ref.memory.dense(n))


def test_default_pairs_come_from_earlier_solves_and_stay_fixed_during_a_solve() -> None:
    n = 30
    a = _spd(n, 3)
    prec = LBFGSPreconditioner(n, history=8, pairs_per_solve=3)
    assert prec.fixed and prec.source == LBFGSPairSource.PREVIOUS
    prec.begin_solve(0.0)
    v = torch.randn(n, dtype=DT)
    _cg_pairs(a, prec, iters=7)
    assert len(prec.memory) == 0 and torch.equal(prec.matvec(v), v)  # nothing active in the first solve
    prec.end_solve()
    assert len(prec.memory) == 3  # the first 3 pairs of that run
    before = prec.matvec(v)
    prec.begin_solve(0.0)
    _cg_pairs(a, prec, iters=7, seed=2)
    assert torch.equal(prec.matvec(v), before)  # unchanged while the solve runs
    prec.end_solve()
    assert len(prec.memory) == 6  # accumulated over solves
    for _ in range(3):
        _previous_run(prec, a, 0.0, iters=7, seed=3)
    assert len(prec.memory) == 8  # capped at the history, oldest dropped


def test_pair_selection_first_last_even() -> None:
    """Tagged fake pairs (s = e_0 * i) show which of a 25-step run each rule keeps."""
    n = 4

    def run(selection: str, k: int) -> list[int]:
        prec = LBFGSPreconditioner(n, history=k, pairs_per_solve=k, selection=selection, min_curvature=0.0)
        prec.begin_solve(0.0)
        for i in range(1, 26):
            s = torch.zeros(n, dtype=DT)
            s[0] = float(i)
            prec.observe(s, s.clone())
        prec.end_solve()
        return [int(t[0]) for t in prec.memory._s]

    assert run("first", 5) == [1, 2, 3, 4, 5]
    assert run("last", 5) == [21, 22, 23, 24, 25]
    even = run("even", 5)
    assert len(even) == 5 and even == sorted(even) and even[0] <= 8 and even[-1] >= 20
    gaps = [b - a for a, b in zip(even, even[1:])]
    assert max(gaps) - min(gaps) <= 4  # spread over the run, not bunched


def test_in_solve_source_resets_each_solve_and_is_not_fixed() -> None:
    n = 8
    a = _spd(n, 3)
    fresh = LBFGSPreconditioner(n, history=4, source="in_solve")
    assert not fresh.fixed
    fresh.begin_solve(0.0)
    _cg_pairs(a, fresh, iters=5)
    assert len(fresh.memory) == 4
    fresh.end_solve()
    fresh.begin_solve(0.0)
    assert len(fresh.memory) == 0
    v = torch.randn(n, dtype=DT)
    assert torch.equal(fresh.matvec(v), v)  # empty memory = identity


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="history"):
        LBFGSPreconditioner(5, history=0)
    with pytest.raises(ValueError, match="pairs_per_solve"):
        LBFGSPreconditioner(5, history=4, pairs_per_solve=0)
    assert LBFGSPreconditioner(5, history=4, pairs_per_solve=9).pairs_per_solve == 4


def test_state_round_trip() -> None:
    n = 9
    a = _spd(n, 4)
    prec = LBFGSPreconditioner(n, history=3, pairs_per_solve=3)
    _previous_run(prec, a, 0.1, iters=4)
    clone = LBFGSPreconditioner(n, history=3, pairs_per_solve=3)
    clone.load_state_dict(prec.state_dict())
    v = torch.randn(n, dtype=DT)
    assert torch.equal(clone.matvec(v), prec.matvec(v))
    assert clone.damping == 0.1 and clone.accepted == prec.accepted
    assert math.isfinite(float(clone.matvec(v).sum()))


# ---------------------------------------------------------------- acceleration, float64
def related_spd_systems(n: int = 200, count: int = 10, seed: int = 0, outliers: int = 20, perturb: float = 0.05):
    """A sequence of related damped SPD systems ``(C + E_k + lambda_k I) x = b_k``, as HF
    solves them: a GGN-like spectrum (a bulk in [1, 10] and ``outliers`` eigenvalues in
    [1e2, 1e4]), a fresh symmetric perturbation ``E_k`` (spectral norm ``perturb``, the
    curvature-sample change), damping ``lambda_k`` in [0.01, 1] and right-hand side per
    system.  Returns ``[(A_k, lambda_k, b_k)]``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    ev = torch.cat([torch.logspace(0, 1, n - outliers, dtype=DT), torch.logspace(2, 4, outliers, dtype=DT)])
    c = (q * ev) @ q.T
    out = []
    for _ in range(count):
        e = torch.randn(n, n, generator=g, dtype=DT)
        e = (e + e.T) / 2
        e *= perturb / torch.linalg.matrix_norm(e, 2)
        lam = float(10 ** torch.empty(1, dtype=DT).uniform_(-2, 0, generator=g))
        out.append((c + e + lam * torch.eye(n, dtype=DT), lam, torch.randn(n, generator=g, dtype=DT)))
    return out


def _iterations(systems, prec=None, flexible: bool = False) -> list[int]:
    its = []
    for a, lam, b in systems:
        if prec is not None:
            prec.begin_solve(lam)
        res = conjugate_gradient(
            DenseOperator(a), b, precond=prec, flexible=flexible, observe=prec.observe if prec is not None else None,
            rtol=1e-8, progress_tol=None, max_iters=2000,
        )  # fmt: skip
        assert res.stop_reason.value == "residual"
        torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=1e-5, atol=1e-7)
        if prec is not None:
            prec.end_solve()
        its.append(res.iterations)
    return its


def test_default_lbfgs_needs_at_least_1_5x_fewer_iterations_than_cg() -> None:
    """The acceleration itself: on related float64 systems, PCG with the default L-BFGS
    preconditioner (earlier solves' pairs, fixed during each solve) reaches a 1e-8
    relative residual in at least 1.5x fewer iterations than CG (the first solve has no
    pairs yet and is not counted).  An identity or CG-equivalent preconditioner fails."""
    systems = related_spd_systems()
    cg = _iterations(systems)
    lbfgs = _iterations(systems, LBFGSPreconditioner(200))
    assert lbfgs[0] == cg[0]
    assert sum(cg[1:]) >= 1.5 * sum(lbfgs[1:]), (cg, lbfgs)
    # pairs of the last run only (no accumulation) do much less: the next PCG run's pairs
    # describe the spectrum the preconditioner left, and the earlier capture is forgotten
    last_only = _iterations(systems, LBFGSPreconditioner(200, history=20, pairs_per_solve=20))
    assert sum(last_only[1:]) > sum(lbfgs[1:])


def test_in_solve_pairs_give_back_cg_in_exact_arithmetic() -> None:
    """Pairs from the running solve only A-conjugate the new residual against
    directions CG already has: the flexible beta's correction vanishes and the iterates
    are CG's (to rounding, on a well-conditioned system where rounding stays small)."""
    n = 40
    a = _spd(n, 0) / 1000 + torch.eye(n, dtype=DT)  # condition number ~2
    b = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=DT)
    kw = dict(progress_tol=None, max_iters=6)
    cg = conjugate_gradient(DenseOperator(a), b, **kw)
    prec = LBFGSPreconditioner(n, history=10, source="in_solve")
    prec.begin_solve(0.0)
    pcg = conjugate_gradient(DenseOperator(a), b, precond=prec, observe=prec.observe, flexible=True, **kw)
    assert len(prec.memory) > 0  # the pairs were active
    torch.testing.assert_close(pcg.x, cg.x, rtol=1e-10, atol=1e-12)


def test_non_flexible_pcg_refuses_a_preconditioner_that_changes_in_the_solve() -> None:
    n = 10
    a = _spd(n, 5)
    prec = LBFGSPreconditioner(n, source="in_solve")
    prec.begin_solve(0.0)
    with pytest.raises(ValueError, match="flexible"):
        conjugate_gradient(DenseOperator(a), torch.ones(n, dtype=DT), precond=prec, observe=prec.observe)
